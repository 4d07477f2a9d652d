"""Throughput of the executors (a benchmark that reports numbers, not a timed test).

    python -m distillbench.benchmarks.perf.executor_throughput --openml-source DIR \
        [--suite smoke] [--seeds 4] [--rounds 3]

Runs the same sweep of jobs (a suite, both frameworks, several seeds, a small training-dominated
config, the smallest timing budget) as real ``distillbench run`` subprocesses, four ways:

    local            --executor local                 one job at a time, 2 threads per job
    local x2         --executor local --workers 2     two jobs at once, 1 thread each
    dask x1          --executor dask --workers 1      a LocalCluster of 1 worker process
    dask x2          --executor dask --workers 2      a LocalCluster of 2 worker processes

(each run gets --threads = this machine's cores, shared among the jobs at once), in ``--rounds``
rounds, the variants interleaved within a round so that a drift of the machine's speed hits them
alike. It prints per variant the medians over rounds of: jobs per minute over the run's job phase
(the manifest's ``wall_seconds``: from the first job handed out to the last record written, worker
and framework start-up included, cluster start-up and data preparation not), and of the whole
command (process start to exit); then the scaling factor (2 workers over 1, for each executor) and
the overhead of the Dask path against the local one for the same jobs and workers (ratio of the
job-phase times, and seconds per job). The machine's load average is printed before and after each
run: on a shared machine the numbers are only as good as it was quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"local": ("local", 1), "local x2": ("local", 2), "dask x1": ("dask", 1), "dask x2": ("dask", 2)}
CONFIG = """\
name = "perf-dask"   # small models, training-dominated jobs

[teacher]
widths = [64, 64]
dropout = 0.0

[student]
widths = [8]

[training]
epochs = 15
patience = 15
"""


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("distillbench")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "distillbench.cli"]


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def run_variant(name: str, args, tmp: Path, round_: int) -> dict:
    executor, workers = VARIANTS[name]
    out = tmp / f"{name.replace(' ', '-')}-{round_}"
    command = [
        *_cli(),
        "run",
        "--suite",
        args.suite,
        "--frameworks",
        args.frameworks,
        "--seeds",
        str(args.seeds),
        "--config",
        str(tmp / "config.toml"),
        "--timing-budget",
        str(args.timing_budget),
        "--out",
        str(out),
        "--threads",
        str(args.threads),
        "--executor",
        executor,
        "--workers",
        str(workers),
        "--cache",
        args.cache,
    ]
    if args.openml_source:
        command += ["--openml-source", args.openml_source]
    load_before = _loadavg()
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    command_wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"executor_throughput: {name} failed with exit code {result.returncode}:\n{result.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    jobs = manifest["jobs"]["ok"] + manifest["jobs"]["failed"]
    if manifest["jobs"]["failed"]:
        sys.exit(f"executor_throughput: {name}: {manifest['jobs']['failed']} jobs failed (see {out})")
    return {
        "variant": name,
        "round": round_,
        "jobs": jobs,
        "wall_seconds": manifest["wall_seconds"],
        "command_seconds": command_wall,
        "measured_seconds": manifest["measured_seconds"],
        "jobs_per_minute": 60 * jobs / manifest["wall_seconds"],
        "command_jobs_per_minute": 60 * jobs / command_wall,
        "concurrency": manifest["concurrency"],
        "threads_per_job": manifest["threads"],
        "load_before": load_before,
        "load_after": _loadavg(),
    }


def summarize(results: list[dict]) -> dict:
    by = {name: [r for r in results if r["variant"] == name] for name in VARIANTS}
    med = {
        name: {
            key: statistics.median(r[key] for r in rs)
            for key in (
                "wall_seconds",
                "command_seconds",
                "jobs_per_minute",
                "command_jobs_per_minute",
                "measured_seconds",
            )
        }
        for name, rs in by.items()
    }
    jobs = results[0]["jobs"]
    return {
        "medians": med,
        "scaling": {
            executor: med[f"{executor} x2"]["jobs_per_minute"] / med[one]["jobs_per_minute"]
            for executor, one in (("local", "local"), ("dask", "dask x1"))
        },
        "dask_overhead": {
            f"{w} worker{'s' if w > 1 else ''}": {
                "job_phase_ratio": med[d]["wall_seconds"] / med[loc]["wall_seconds"],
                "seconds_per_job": (med[d]["wall_seconds"] - med[loc]["wall_seconds"]) / jobs,
                "command_ratio": med[d]["command_seconds"] / med[loc]["command_seconds"],
                "command_seconds_per_job": (med[d]["command_seconds"] - med[loc]["command_seconds"]) / jobs,
            }
            for w, loc, d in ((1, "local", "dask x1"), (2, "local x2", "dask x2"))
        },
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m distillbench.benchmarks.perf.executor_throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--openml-source", default=os.environ.get("DISTILLBENCH_OPENML_SOURCE"), metavar="DIR")
    parser.add_argument("--cache", metavar="DIR", help="writable OpenML cache (default: a temporary folder)")
    parser.add_argument("--suite", default="smoke")
    parser.add_argument("--frameworks", default="torch,tensorflow")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="threads per run, shared by its jobs at once"
    )
    parser.add_argument(
        "--timing-budget", type=float, default=0.01, help="seconds of latency calls per model (default 0.01)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every run and the summary here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.seeds < 1 or args.rounds < 1:
        sys.exit("executor_throughput: --seeds and --rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="perf-dask-") as tmp:
        tmp = Path(tmp)
        (tmp / "config.toml").write_text(CONFIG)
        args.cache = args.cache or str(tmp / "openml-cache")
        print(
            f"cores {os.cpu_count()}, load average before: {_loadavg()}; suite {args.suite}, {args.frameworks}, "
            f"{args.seeds} seeds, {args.rounds} rounds, --threads {args.threads}",
            flush=True,
        )
        results = []
        for round_ in range(args.rounds):
            order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                r = run_variant(name, args, tmp, round_)
                results.append(r)
                print(
                    f"  round {round_} {name:<9} {r['jobs']} jobs  job phase {r['wall_seconds']:6.1f} s "
                    f"({r['jobs_per_minute']:5.1f} jobs/min)  command {r['command_seconds']:6.1f} s  "
                    f"load {r['load_before']:.2f} -> {r['load_after']:.2f}",
                    flush=True,
                )
    summary = summarize(results)
    print(f"\nmedians over {args.rounds} rounds ({results[0]['jobs']} jobs per run):")
    print(
        f"  {'variant':<9} {'jobs/min (job phase)':>21} {'jobs/min (command)':>19} "
        f"{'job phase s':>12} {'command s':>10}"
    )
    for name, m in summary["medians"].items():
        print(
            f"  {name:<9} {m['jobs_per_minute']:>21.1f} {m['command_jobs_per_minute']:>19.1f} "
            f"{m['wall_seconds']:>12.1f} {m['command_seconds']:>10.1f}"
        )
    print(
        "scaling, 2 workers over 1 (job-phase jobs/min): "
        + ", ".join(f"{k} {v:.2f}x" for k, v in summary["scaling"].items())
    )
    for workers, o in summary["dask_overhead"].items():
        print(
            f"dask overhead vs local, {workers}: "
            f"job phase {o['job_phase_ratio']:.2f}x ({o['seconds_per_job']:+.2f} s/job), "
            f"whole command {o['command_ratio']:.2f}x ({o['command_seconds_per_job']:+.2f} s/job)"
        )
    print(f"load average after: {_loadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
