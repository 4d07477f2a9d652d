"""`distillbench report`: parses its arguments and calls ``report.write_report``."""

from __future__ import annotations

import logging
from pathlib import Path

from distillbench import validate
from distillbench.cli import add_command
from distillbench.errors import UserError

log = logging.getLogger(__name__)

REPORT_DESCRIPTION = """\
Write the report of a run folder into OUT (default: reports/<run_id>/):
  report.md    GitHub-flavoured Markdown (a CI job summary or a pull-request comment)
  report.html  one self-contained file (inline CSS, figures embedded), readable offline
  figures/     *.png and *.svg     tables/  *.csv and *.tex (booktabs)
Per dataset and framework: quality of teacher, distilled and scratch student (mean and 95% CI over
seeds), retention, KD gain, parameters, latency, speed-up; framework vs framework; across datasets:
median retention, win/tie/loss with a Wilcoxon signed-rank test, mean ranks (Friedman, Nemenyi
critical-difference diagram from 5 datasets); failed jobs with their reasons.
"""
REPORT_EXAMPLES = """\
examples:
  distillbench report  # the newest run under results/, into reports/<run_id>/
  distillbench report results/mine --out /tmp/mine-report  # a given run, into a given folder
"""


def register(subparsers) -> None:
    help = "write the report of a run (Markdown, HTML, figures, tables)"
    report = add_command(subparsers, "report", help, REPORT_DESCRIPTION, REPORT_EXAMPLES)
    report.add_argument(
        "run_dir", nargs="?", metavar="RUN_DIR", help="a run folder (default: the newest under results/)"
    )
    report.add_argument(
        "--out",
        type=validate.output_folder,
        metavar="DIR",
        help="report folder (default: reports/<run_id>, the run id a plain folder name)",
    )
    report.set_defaults(func=_report)


def report_folder(args) -> Path:
    """Write the report of parsed `report` arguments; its folder (the CLI's and ``distillbench.report``'s)."""
    from distillbench.benchmarks.store.run_folder import newest_run

    run_dir = Path(args.run_dir) if args.run_dir else newest_run()
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    from distillbench.benchmarks.reporting.report import write_report  # scipy and matplotlib: only once there is work

    return write_report(run_dir, Path(args.out) if args.out else None)


def _report(args) -> int:
    out = report_folder(args)
    log.info(f"report: {out / 'report.html'} and {out / 'report.md'} (figures/, tables/ beside them)")
    return 0
