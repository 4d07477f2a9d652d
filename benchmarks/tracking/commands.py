"""Regression tracking's commands: `distillbench compare`, `distillbench baseline update`,
`distillbench history`. They parse their arguments and call ``compare.py``, ``baseline.py`` and
``history.py``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from distillbench import validate
from distillbench.benchmarks.tracking.baseline import BASELINES
from distillbench.cli import add_command
from distillbench.errors import UserError

log = logging.getLogger(__name__)

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

--json FILE writes the same comparison for machines: "result" (ok or fail) and "exit_code" under
--fail-on, both runs, the thresholds, and every row and job with its verdict and whether it fails
(--json - prints it on stdout instead of the text).

Exit status: 0 no regression that --fail-on counts, 1 regression, 2 usage error, 3 internal error.
"""
COMPARE_EXAMPLES = """\
examples:
  distillbench compare quick results/mine --fail-on quality  # CI's gate: against the committed baseline
  distillbench compare results/old results/new --md compare.md  # also as Markdown (a CI summary, a PR comment)
  distillbench compare quick results/mine --json verdicts.json  # also the verdicts for machines
"""
BASELINE_EXAMPLES = """\
examples:
  distillbench baseline update results/mine  # into results/baselines/<its suite>/; then commit it
  distillbench baseline update results/mine --name quick-avx512  # under another name
"""
HISTORY_EXAMPLES = """\
examples:
  distillbench history results/  # every run under results/, into reports/history/
  distillbench history results/ --metric primary --metric train_seconds --out reports/trend
  distillbench history results/ --html  # also reports/history/history.html, steps judged as compare judges
"""


def register(subparsers) -> None:
    from distillbench.benchmarks.tracking.history import DEFAULT_METRICS, KNOWN_METRICS
    from distillbench.benchmarks.tracking.verdicts import (
        DEFAULT_ALPHA,
        DEFAULT_FLOORS,
        DEFAULT_K,
        DEFAULT_TIMING_THRESHOLD,
        FAIL_ON,
    )

    help = "compare a run with a baseline run; exit 1 on a regression"
    compare = add_command(subparsers, "compare", help, COMPARE_DESCRIPTION, COMPARE_EXAMPLES)
    compare.add_argument("baseline", metavar="BASELINE_RUN", help="a run folder, a baseline folder, or a baseline name")
    compare.add_argument("candidate", metavar="CANDIDATE_RUN", help="the run folder to check")
    compare.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        default="all",
        help="which regressions give exit 1 (default: all; missing or failed jobs count for all but none)",
    )
    compare.add_argument(
        "--md", type=validate.output_file, metavar="FILE", help="also write the comparison as Markdown to FILE"
    )
    compare.add_argument(
        "--json",
        type=validate.output_file_or_stdout,
        metavar="FILE",
        help="also write the comparison as JSON to FILE (schema: the README); '-': print it instead of the text",
    )

    def threshold(flag: str, parse, default: float, metavar: str, help: str) -> None:
        compare.add_argument(flag, type=parse, default=default, metavar=metavar, help=f"{help} (default {default:g})")

    threshold("--k", validate.nonnegative_float, DEFAULT_K, "K", "quality: standard errors of the difference to exceed")
    compare.add_argument(
        "--floor",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="quality: the least change that counts for METRIC, absolute (0.01) or relative to the "
        "baseline mean (2%%); repeatable. Defaults: "
        + ", ".join(f"{m}={v}" for m, v in DEFAULT_FLOORS.items()).replace("%", "%%"),
    )
    compare.add_argument(
        "--unpaired",
        action="store_true",
        help="quality: compare the two runs' means with Welch's standard error even where they share seeds",
    )
    slowdown = "timing: the slowdown that counts, as a fraction of the baseline (0.5: 1.5x as slow)"
    threshold("--timing-threshold", validate.nonnegative_float, DEFAULT_TIMING_THRESHOLD, "F", slowdown)
    threshold(
        "--alpha", validate.probability, DEFAULT_ALPHA, "P", "timing: significance level of the Mann-Whitney U test"
    )
    compare.set_defaults(func=_compare)

    baseline = subparsers.add_parser(
        "baseline",
        epilog=BASELINE_EXAMPLES,
        help="manage the committed baselines (results/baselines/)",
        description="Manage the committed baselines under results/baselines/.",
    )
    actions = baseline.add_subparsers(dest="action", metavar="ACTION", required=True)
    update = actions.add_parser(
        "update",
        epilog=BASELINE_EXAMPLES,
        help="copy a run into results/baselines/<name>/",
        description="Copy RUN_DIR's records.jsonl and manifest.json into results/baselines/<name>/ (replacing the "
        "folder as a whole, so that a reader never sees half of it). A run with failed jobs, or one that "
        "did not complete, is refused unless --allow-failed. Commit the folder afterwards.",
    )
    update.add_argument("run_dir", metavar="RUN_DIR", help="the run to make the baseline")
    update.add_argument("--name", help="the baseline's name (default: the run's suite)")
    update.add_argument(
        "--allow-failed", action="store_true", help="accept a run with failed jobs or one that did not complete"
    )
    update.add_argument(
        "--baselines",
        type=validate.output_folder,
        default=str(BASELINES),
        metavar="DIR",
        help=f"where baselines live (default {BASELINES})",
    )
    update.set_defaults(func=_baseline_update)

    history = subparsers.add_parser(
        "history",
        epilog=HISTORY_EXAMPLES,
        help="the trend of metrics across runs: a figure (PNG) and a table (CSV)",
        description="Draw the trend of the chosen metrics across the runs in RESULTS_DIR... (run folders, or folders "
        "of run folders such as results/): one panel per (metric, dataset), one line per (framework, role), "
        "the mean over seeds with the sd as error bars; x is the run's start time, labelled with its "
        "commit. Writes OUT/history.png and OUT/history.csv (and OUT/history.html with --html).",
    )
    history.add_argument("folders", nargs="+", metavar="RESULTS_DIR", help="run folders or folders of run folders")
    history.add_argument(
        "--metric",
        action="append",
        dest="metrics",
        metavar="NAME",
        choices=KNOWN_METRICS,
        help=f"a metric to draw, repeatable: primary (accuracy or rmse, per dataset), a test metric, or a "
        f"record field such as kd_gain, train_seconds, latency_p50_us (default: {' '.join(DEFAULT_METRICS)})",
    )
    history.add_argument(
        "--out",
        type=validate.output_folder,
        default=str(Path("reports") / "history"),
        metavar="DIR",
        help="output folder (default reports/history)",
    )
    history.add_argument(
        "--html",
        action="store_true",
        help="also write OUT/history.html: one plot per (dataset, framework, role, metric), each step between "
        "consecutive runs marked where compare calls it a change",
    )
    history.set_defaults(func=_history)


def comparison_of(args):
    """The ``compare.Comparison`` of parsed `compare` arguments (the CLI's and ``distillbench.compare``'s)."""
    from distillbench.benchmarks.tracking.baseline import resolve_run
    from distillbench.benchmarks.tracking.compare import compare_runs
    from distillbench.benchmarks.tracking.verdicts import DEFAULT_FLOORS, Thresholds, parse_floor

    floors = dict(DEFAULT_FLOORS)
    floors.update(parse_floor(text) for text in args.floor)
    baseline, candidate = resolve_run(args.baseline), resolve_run(args.candidate)
    if baseline.resolve() == candidate.resolve():
        log.warning(f"distillbench compare: note: {baseline} is compared with itself")
    return compare_runs(
        baseline, candidate, Thresholds(args.k, floors, args.timing_threshold, args.alpha, paired=not args.unpaired)
    )


def _compare(args) -> int:
    from distillbench.benchmarks.tracking.comparison_text import comparison_json, format_comparison
    from distillbench.files import write_atomic

    files = {
        option: Path(name) for option, name in (("--md", args.md), ("--json", args.json)) if name not in (None, "-")
    }
    for option, path in files.items():
        if path.is_dir() or not path.parent.is_dir():
            why = "a folder" if path.is_dir() else f"no such folder {path.parent}"
            raise UserError(f"{option} {path}: cannot write there ({why})")
    comparison = comparison_of(args)
    as_json = json.dumps(comparison_json(comparison, args.fail_on), indent=1, allow_nan=False) + "\n"
    print(as_json if args.json == "-" else format_comparison(comparison, args.fail_on), end="")
    for option, path in files.items():
        text = as_json if option == "--json" else format_comparison(comparison, args.fail_on, markdown=True)
        write_atomic(path, text)
        log.info(f"{option.lstrip('-')}: {path}")
    return comparison.exit_code(args.fail_on)


# ---- baseline update


def _baseline_update(args) -> int:
    from distillbench.benchmarks.tracking.baseline import update_baseline

    target = update_baseline(Path(args.run_dir), args.name, args.allow_failed, Path(args.baselines))
    print(f"baseline {target.name}: {target}/ (from {args.run_dir}); commit it: git add {target}")
    return 0


# ---- history


def _history(args) -> int:
    from distillbench.benchmarks.tracking.history import DEFAULT_METRICS, write_history

    files, rows = write_history(
        [Path(f) for f in args.folders], args.metrics or list(DEFAULT_METRICS), Path(args.out), page=args.html
    )
    runs = len({r["run_id"] for r in rows})
    print(f"history of {runs} runs, {len(rows)} rows: {', '.join(map(str, files))}")
    return 0
