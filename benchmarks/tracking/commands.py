"""Regression tracking: `distillbench compare`, `distillbench baseline update`, `distillbench history`.

A baseline is a run folder (``records.jsonl`` + ``manifest.json``) kept under
``results/baselines/<name>/`` and committed; ``compare`` takes it, or any run folder, as BASELINE.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from distillbench.errors import UserError

BASELINES = Path("results") / "baselines"
BASELINE_INFO = "baseline.json"

COMPARE_DESCRIPTION = """\
Compare CANDIDATE_RUN with BASELINE_RUN (a run folder, a results/baselines/<name>/ folder, or just the
name of a baseline): every (dataset, framework, role, metric) present in both, marked improved,
unchanged or regressed; jobs of the baseline that the candidate lacks or failed are regressions, jobs
only in the candidate are reported as new.

Quality (test metrics, retention, kd_gain): regressed when the candidate is worse by more than BOTH
the metric's floor (--floor) AND K standard errors of the difference (--k), from the seed-to-seed
spread: paired by seed where the runs share seeds (seed k = the same split and initial weights in
both runs), else the two runs' spreads combined (Welch; --unpaired forces it). With one seed per run
the floor alone decides. And kd_vs_scratch_%: regressed when the distilled students equal the
scratch students in every seed (the teacher had no effect) while the baseline's did not.

Timing (train_seconds, latency_p50_us, throughput_rows_per_s): regressed when the ratio of the
medians over seeds is beyond 1 + --timing-threshold AND a one-sided Mann-Whitney U test over the
seeds gives p <= --alpha (3 seeds per run are needed at 0.05; with fewer the ratio alone decides).
When the machines differ (CPU, cores, threads, device, Python or framework versions) timing is
advisory: shown, never failing.

Exit status: 0 no regression that --fail-on counts, 1 regression, 2 usage error.
"""


def register(subparsers) -> None:
    from distillbench.benchmarks.tracking.compare import (DEFAULT_ALPHA, DEFAULT_FLOORS, DEFAULT_K, DEFAULT_TIMING_THRESHOLD,
                                                 FAIL_ON)
    from distillbench.benchmarks.tracking.history import DEFAULT_METRICS, KNOWN_METRICS

    compare = subparsers.add_parser("compare", help="compare a run with a baseline run; exit 1 on a regression",
                                    description=COMPARE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_argument("baseline", metavar="BASELINE_RUN", help="a run folder, a baseline folder, or a baseline name")
    compare.add_argument("candidate", metavar="CANDIDATE_RUN", help="the run folder to check")
    compare.add_argument("--fail-on", choices=FAIL_ON, default="all",
                         help="which regressions give exit 1 (default: all; missing or failed jobs count for all but none)")
    compare.add_argument("--md", metavar="FILE", help="also write the comparison as Markdown to FILE")
    compare.add_argument("--k", type=float, default=DEFAULT_K, metavar="K",
                         help=f"quality: standard errors of the difference a change must exceed (default {DEFAULT_K:g})")
    compare.add_argument("--floor", action="append", default=[], metavar="METRIC=VALUE",
                         help="quality: the least change that counts for METRIC, absolute (0.01) or relative to the "
                              "baseline mean (2%%); repeatable. Defaults: "
                              + ", ".join(f"{m}={v}" for m, v in DEFAULT_FLOORS.items()).replace("%", "%%"))
    compare.add_argument("--unpaired", action="store_true",
                         help="quality: compare the two runs' means with Welch's standard error even where they share seeds")
    compare.add_argument("--timing-threshold", type=float, default=DEFAULT_TIMING_THRESHOLD, metavar="F",
                         help=f"timing: the slowdown that counts, as a fraction (default {DEFAULT_TIMING_THRESHOLD:g}, "
                              f"i.e. x{1 + DEFAULT_TIMING_THRESHOLD:.2f})")
    compare.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, metavar="P",
                         help=f"timing: significance level of the Mann-Whitney U test (default {DEFAULT_ALPHA:g})")
    compare.set_defaults(func=_compare)

    baseline = subparsers.add_parser("baseline", help="manage the committed baselines (results/baselines/)",
                                     description="Manage the committed baselines under results/baselines/.")
    actions = baseline.add_subparsers(dest="action", metavar="ACTION", required=True)
    update = actions.add_parser(
        "update", help="copy a run into results/baselines/<name>/",
        description="Copy RUN_DIR's records.jsonl and manifest.json into results/baselines/<name>/ (replacing the "
                    "folder as a whole, so that a reader never sees half of it). A run with failed jobs, or one that "
                    "did not complete, is refused unless --allow-failed. Commit the folder afterwards.")
    update.add_argument("run_dir", metavar="RUN_DIR", help="the run to make the baseline")
    update.add_argument("--name", help="the baseline's name (default: the run's suite)")
    update.add_argument("--allow-failed", action="store_true", help="accept a run with failed jobs or one that did not complete")
    update.add_argument("--baselines", default=str(BASELINES), metavar="DIR", help=f"where baselines live (default {BASELINES})")
    update.set_defaults(func=_baseline_update)

    history = subparsers.add_parser(
        "history", help="the trend of metrics across runs: a figure (PNG) and a table (CSV)",
        description="Draw the trend of the chosen metrics across the runs in RESULTS_DIR... (run folders, or folders "
                    "of run folders such as results/): one panel per (metric, dataset), one line per (framework, role), "
                    "the mean over seeds with the sd as error bars; x is the run's start time, labelled with its "
                    "commit. Writes OUT/history.png and OUT/history.csv.")
    history.add_argument("folders", nargs="+", metavar="RESULTS_DIR", help="run folders or folders of run folders")
    history.add_argument("--metric", action="append", dest="metrics", metavar="NAME", choices=KNOWN_METRICS,
                         help=f"a metric to draw, repeatable: primary (accuracy or rmse, per dataset), a test metric, or a "
                              f"record field such as kd_gain, train_seconds, latency_p50_us (default: {' '.join(DEFAULT_METRICS)})")
    history.add_argument("--out", default=str(Path("reports") / "history"), metavar="DIR",
                         help="output folder (default reports/history)")
    history.set_defaults(func=_history)


def _compare(args) -> int:
    from distillbench.benchmarks.tracking.compare import DEFAULT_FLOORS, Thresholds, compare_runs, format_comparison, parse_floor, resolve_run

    if not args.k >= 0 or not args.timing_threshold >= 0 or not 0 < args.alpha < 1:
        raise UserError("--k and --timing-threshold must be non-negative, --alpha in (0, 1)")
    floors = dict(DEFAULT_FLOORS)
    floors.update(parse_floor(text) for text in args.floor)
    md = Path(args.md) if args.md else None
    if md is not None and (md.is_dir() or not md.parent.is_dir()):
        raise UserError(f"--md {md}: cannot write there ({'a folder' if md.is_dir() else 'no such folder ' + str(md.parent)})")
    baseline, candidate = resolve_run(args.baseline), resolve_run(args.candidate)
    if baseline.resolve() == candidate.resolve():
        print(f"distillbench compare: note: {baseline} is compared with itself", file=sys.stderr)
    comparison = compare_runs(baseline, candidate, Thresholds(args.k, floors, args.timing_threshold, args.alpha, paired=not args.unpaired))
    print(format_comparison(comparison, args.fail_on), end="")
    if md is not None:
        partial = md.with_name(md.name + ".partial")
        partial.write_text(format_comparison(comparison, args.fail_on, markdown=True))
        partial.replace(md)
        print(f"\nmarkdown: {md}", file=sys.stderr)
    return comparison.exit_code(args.fail_on)


# ---- baseline update


def update_baseline(run_dir: Path, name: str | None = None, allow_failed: bool = False,
                    baselines: Path = BASELINES) -> Path:
    """Copy a run into ``baselines/<name>/``, replacing any previous one as a whole."""
    from distillbench.benchmarks.store.run_folder import MANIFEST, RECORDS, latest_records, read_manifest, read_records

    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file() or not (run_dir / RECORDS).is_file():
        raise UserError(f"{run_dir}: not a run folder (needs {RECORDS} and {MANIFEST})")
    manifest = read_manifest(run_dir)
    records = latest_records(read_records(run_dir))
    if not records:
        raise UserError(f"{run_dir}: holds no records")
    name = name or manifest.get("suite")
    if not name:
        raise UserError(f"{run_dir}: the run has no suite (--datasets): name the baseline with --name")
    if name in (".", "..") or "/" in name or name.startswith("."):
        raise UserError(f"--name {name!r}: must be a plain folder name")
    failed = sorted({(r["dataset_id"], r["seed"], r["framework"]) for r in records if r.get("status") != "ok"})
    if not allow_failed:
        if manifest.get("status") != "complete":
            raise UserError(f"{run_dir}: the run is {manifest.get('status')}, not complete (finish it with "
                            f"`distillbench run --resume --out {run_dir}`, or pass --allow-failed)")
        if failed:
            shown = ", ".join(f"dataset {d} seed {s} {f}" for d, s, f in failed[:3]) + (" ..." if len(failed) > 3 else "")
            raise UserError(f"{run_dir}: {len(failed)} failed jobs ({shown}): a baseline with failed jobs hides "
                            "regressions; rerun them with --resume, or pass --allow-failed")
    baselines = Path(baselines)
    baselines.mkdir(parents=True, exist_ok=True)
    target = baselines / name
    if target.resolve() == run_dir.resolve():
        raise UserError(f"{run_dir} is already the baseline {name!r}")
    staging = baselines / f".{name}.new-{os.getpid()}"
    old = baselines / f".{name}.old-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for filename in (RECORDS, MANIFEST):
            shutil.copyfile(run_dir / filename, staging / filename)
            with open(staging / filename, "rb") as fh:
                os.fsync(fh.fileno())
        info = {"name": name, "source": str(run_dir.resolve()), "run_id": manifest.get("run_id"),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "jobs_failed": len(failed),
                "records": len(records)}
        (staging / BASELINE_INFO).write_text(json.dumps(info, indent=1) + "\n")
        # Swap the folder as a whole: a reader sees the old baseline, the new one, or (for the
        # instant between the two renames) none, never a mix of the two.
        if target.exists():
            os.rename(target, old)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not target.exists():
            os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target


def _baseline_update(args) -> int:
    target = update_baseline(Path(args.run_dir), args.name, args.allow_failed, Path(args.baselines))
    print(f"baseline {target.name}: {target}/ (from {args.run_dir}); commit it: git add {target}")
    return 0


# ---- history


def _history(args) -> int:
    from distillbench.benchmarks.tracking.history import DEFAULT_METRICS, write_history

    csv_path, png_path, rows = write_history([Path(f) for f in args.folders], args.metrics or list(DEFAULT_METRICS),
                                             Path(args.out))
    runs = len({r["run_id"] for r in rows})
    print(f"history of {runs} runs, {len(rows)} rows: {csv_path}, {png_path}")
    return 0
