"""Performance of the harness itself (a benchmark that reports numbers, not a timed test).

    python -m distillbench.benchmarks.perf.harness_overhead --openml-source DIR [--suite quick] [--seeds 3]

Measures and prints:

(a) the wall time of ``distillbench run`` of a suite with both frameworks (a real subprocess);
(b) the harness overhead that run reports in its manifest: the share of its wall time not spent in
    measured training or inference (``harness_overhead``, ``wall_seconds``, ``measured_seconds``);
(c) the measurement overhead at batch 1: for a student of the same config, in each framework, in
    one process per framework (as the harness runs them), the p50 latency through the harness's own
    ``timing.latency_samples_us`` and through a bare loop timing the same call path
    (``backend.serving_fn``) with ``perf_counter_ns`` around each call, and their ratio (target:
    within 1.3x). Also the mean time per call of an untimed loop, which includes what the clock
    itself costs and the calls' outliers. Rounds run harness and bare loop in ABBA order; the ratio
    is the median over rounds of the within-round ratio (robust to the machine's speed drifting),
    printed with the medians over rounds.

The machine's load average is printed too: on a shared machine the numbers are only as good as it
was quiet.
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

from distillbench.benchmarks.store.record import is_ok
from distillbench.benchmarks.store.run_folder import read_run

FRAMEWORKS = ("torch", "tensorflow")
TARGET_RATIO = 1.3


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("distillbench")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "distillbench.cli"]


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


# ---- (a) and (b): one real run


def measure_run(args, out: Path) -> dict:
    command = [
        *_cli(),
        "run",
        "--suite",
        args.suite,
        "--frameworks",
        ",".join(FRAMEWORKS),
        "--seeds",
        str(args.seeds),
        "--out",
        str(out),
        "--timing-budget",
        str(args.timing_budget),
    ]
    command += _data_options(args)
    if args.config:
        command += ["--config", args.config]
    if args.threads:
        command += ["--threads", str(args.threads)]
    print(f"(a) running: {' '.join(command)}", flush=True)
    log = out.parent / f"{out.name}.log"
    start = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if code != 0:
        sys.exit(f"harness_overhead: the run failed with exit code {code}; its output:\n{log.read_text()[-3000:]}")
    run = read_run(out)
    manifest, records = run.manifest, run.records
    students = {
        fw: [r["latency_p50_us"] for r in records if r["framework"] == fw and r["role"] == "student_kd" and is_ok(r)]
        for fw in FRAMEWORKS
    }
    return {
        "command_wall_seconds": wall,
        "wall_seconds": manifest["wall_seconds"],
        "measured_seconds": manifest["measured_seconds"],
        "harness_overhead": manifest["harness_overhead"],
        "jobs": manifest["jobs"],
        "student_kd_p50_us_median": {fw: statistics.median(v) if v else None for fw, v in students.items()},
    }


def _data_options(args) -> list[str]:
    options = []
    if args.openml_source:
        options += ["--openml-source", args.openml_source]
    if args.cache:
        options += ["--cache", args.cache]
    return options


# ---- (c): harness timing vs a bare loop, in one process per framework


def bare_loop_us(fn, x, n: int):
    """Per-call wall time (us) of ``fn(row)`` over n single rows: nothing but the clock around each call."""
    import numpy as np

    from distillbench.benchmarks.running import timing

    rows = timing.single_rows(x, n)
    for row in rows[: timing.WARMUP_CALLS]:
        fn(row)
    clock = time.perf_counter_ns
    samples = []
    for row in rows:
        start = clock()
        fn(row)
        samples.append(clock() - start)
    return np.asarray(samples) / 1000.0


def amortised_us(fn, x, n: int) -> float:
    """Mean wall time (us) per call of an untimed loop of n single-row calls."""
    from distillbench.benchmarks.running import timing

    rows = timing.single_rows(x, n)
    for row in rows[: timing.WARMUP_CALLS]:
        fn(row)
    start = time.perf_counter_ns()
    for row in rows:
        fn(row)
    return (time.perf_counter_ns() - start) / n / 1000.0


def latency_worker(framework: str, args) -> dict:
    """Train the scratch student of the config on the dataset (seed 0), then time its serving call."""
    import numpy as np

    from distillbench.benchmarks.running import timing
    from distillbench.datasets.prepare import get_prepared
    from distillbench.datasets.sources import OpenMLCache
    from distillbench.implementations.frameworks import get_backend
    from distillbench.implementations.pipeline import Data, Pipeline
    from distillbench.implementations.spec import load_spec

    data = get_prepared(args.dataset, 0, cache=OpenMLCache.resolve(args.cache, args.openml_source))
    backend = get_backend(framework)
    backend.configure(0, args.threads or os.cpu_count(), "cpu")
    pipeline = Pipeline(
        backend,
        load_spec(args.config),
        Data(data.task, data.n_classes, data.x_train, data.y_train, data.x_val, data.y_val, data.onehot_groups),
        0,
    )
    model, _ = pipeline.fit_student_scratch()
    fn, path = backend.serving_fn(model)
    harness, bare, amortised, calls = [], [], [], []
    for i in range(args.rounds):

        def run_harness():
            samples = timing.latency_samples_us(fn, data.x_test, args.timing_budget)
            harness.append(float(np.percentile(samples, 50)))
            calls.append(len(samples))

        def run_bare():
            bare.append(float(np.percentile(bare_loop_us(fn, data.x_test, calls[-1] if calls else 2000), 50)))

        # ABBA order: a drift in the machine's speed affects both sides alike.
        for step in (run_harness, run_bare) if i % 2 == 0 else (run_bare, run_harness):
            step()
        amortised.append(amortised_us(fn, data.x_test, calls[-1]))
    return {
        "framework": framework,
        "dataset": f"{data.dataset_id} ({data.name})",
        "call_path": path,
        "n_params": backend.n_params(model),
        "calls_per_round": calls,
        "harness_p50_us": harness,
        "bare_p50_us": bare,
        "amortised_us": amortised,
    }


def measure_latency(args, tmp: Path) -> list[dict]:
    results = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or os.cpu_count())}  # as the harness's workers
    for framework in FRAMEWORKS:
        out = tmp / f"latency-{framework}.json"
        command = [
            sys.executable,
            "-m",
            "distillbench.benchmarks.perf.harness_overhead",
            "--latency-worker",
            framework,
            "--result",
            str(out),
            "--dataset",
            str(args.dataset),
            "--rounds",
            str(args.rounds),
            "--timing-budget",
            str(args.timing_budget),
            *_data_options(args),
        ]
        if args.config:
            command += ["--config", args.config]
        if args.threads:
            command += ["--threads", str(args.threads)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"harness_overhead: the {framework} latency measurement failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(out.read_text()))
    return results


# ---- the command


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m distillbench.benchmarks.perf.harness_overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--suite", default="quick", help="suite to run (default quick)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds (default 3)")
    parser.add_argument(
        "--openml-source",
        default=os.environ.get("DISTILLBENCH_OPENML_SOURCE"),
        help="read-only OpenML cache, e.g. ../shared/openml-cache (default: $DISTILLBENCH_OPENML_SOURCE)",
    )
    parser.add_argument(
        "--cache",
        help="writable OpenML cache (default: a new temporary folder, so the run includes the first load of the data)",
    )
    parser.add_argument("--config", help="pipeline config, file or preset (default: the run's default)")
    parser.add_argument("--threads", type=int, help="threads per framework (default: all cores)")
    parser.add_argument(
        "--timing-budget",
        type=float,
        default=2.0,
        help="seconds of latency calls per model (default 2, the run's default)",
    )
    parser.add_argument("--rounds", type=int, default=15, help="rounds of harness vs bare-loop latency (default 15)")
    parser.add_argument("--dataset", type=int, help="dataset of the latency measurement (default: the suite's first)")
    parser.add_argument("--skip-run", action="store_true", help="only (c), the measurement overhead")
    parser.add_argument("--keep", metavar="DIR", help="keep the run folder here (default: a temporary folder)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    parser.add_argument("--latency-worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.latency_worker:
        Path(args.result).write_text(json.dumps(latency_worker(args.latency_worker, args)))
        return 0
    if args.seeds < 1 or args.rounds < 1 or args.timing_budget <= 0:
        sys.exit("harness_overhead: --seeds and --rounds must be at least 1, --timing-budget positive")
    from distillbench.datasets.suites import load_suite

    if args.dataset is None:
        args.dataset = load_suite(args.suite).entries[0].dataset_id
    with tempfile.TemporaryDirectory(prefix="perf-harness-") as tmp:
        tmp = Path(tmp)
        args.cache = args.cache or str(tmp / "openml-cache")
        print(f"load average before: {_loadavg()}  (cores: {os.cpu_count()})", flush=True)
        report: dict = {
            "suite": args.suite,
            "seeds": args.seeds,
            "timing_budget_s": args.timing_budget,
            "load_average_before": _loadavg(),
        }
        if not args.skip_run:
            out = Path(args.keep) if args.keep else tmp / "run"
            run = report["run"] = measure_run(args, out)
            print(
                f"(a) wall time of `distillbench run --suite {args.suite} --seeds {args.seeds}` with both frameworks: "
                f"{run['command_wall_seconds']:.1f} s (jobs: {run['jobs']})"
            )
            print(
                f"(b) harness overhead from the manifest: {100 * run['harness_overhead']:.1f}% "
                f"(wall_seconds {run['wall_seconds']:.1f}, measured_seconds {run['measured_seconds']:.1f}; "
                f"target < 10%)"
            )
            print(
                "    student_kd p50 latency in the run, median over jobs: "
                + ", ".join(f"{fw} {v:.1f} us" for fw, v in run["student_kd_p50_us_median"].items() if v is not None)
            )
        print(
            f"(c) measurement overhead at batch 1, student of dataset {args.dataset}, {args.rounds} rounds "
            f"(medians over rounds):",
            flush=True,
        )
        latency = report["latency"] = measure_latency(args, tmp)
        print(
            f"    {'framework':<11} {'harness p50 us':>15} {'bare p50 us':>12} {'ratio':>6} {'of medians':>8} "
            f"{'untimed mean us':>16}  calls  call path"
        )
        for item in latency:
            h, b = statistics.median(item["harness_p50_us"]), statistics.median(item["bare_p50_us"])
            paired = statistics.median(x / y for x, y in zip(item["harness_p50_us"], item["bare_p50_us"]))
            item.update(
                harness_p50_us_median=h,
                bare_p50_us_median=b,
                ratio_of_medians=h / b,
                ratio=paired,
                amortised_us_median=statistics.median(item["amortised_us"]),
            )
            print(
                f"    {item['framework']:<11} {h:>15.1f} {b:>12.1f} {paired:>6.3f} {h / b:>8.3f} "
                f"{item['amortised_us_median']:>16.1f}  "
                f"{statistics.median(item['calls_per_round']):>5.0f}  {item['call_path']}"
            )
        print(
            "    ratio: median over rounds of harness p50 / bare p50 in the same round; "
            "of medians: median harness p50 / median bare p50"
        )
        worst = max(item["ratio"] for item in latency)
        print(
            f"    worst ratio {worst:.3f} (target: within {TARGET_RATIO}x): "
            f"{'ok' if worst <= TARGET_RATIO else 'OVER TARGET'}"
        )
        report["load_average_after"] = _loadavg()
        print(f"load average after: {report['load_average_after']}")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
