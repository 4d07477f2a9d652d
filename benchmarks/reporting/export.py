"""`distillbench export`: runs as one table (``frame.load``), written as CSV or Parquet."""

from __future__ import annotations

import argparse
import importlib.util
import io
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from distillbench import validate
from distillbench.cli import add_command
from distillbench.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

FORMATS = ("csv", "parquet")
LAYOUTS = ("records", "tabarena")
EXPORT_DESCRIPTION = """\
Write the results of RUN... (run folders, or folders of run folders such as results/) as one table,
the same as distillbench.load() gives in Python. --layout records (default): one row per (run,
dataset, seed, framework, configuration, role), the latest record of each as every command reads it
(a resumed run's superseded records dropped, a killed run's partial last line ignored, a damaged line
skipped with a warning), the test metrics as columns (accuracy, rmse, ...), the manifest's commit,
suite, machine and package versions joined in. --layout tabarena: one row per ok model in TabArena's
names: method (framework/role), task (dataset), fold (seed), metric_error (of the primary metric),
time_train_s, time_infer_s (the README's "Results as a table").

CSV writes times in UTC (2026-05-01 12:00:00.5+00:00); Parquet keeps every column's type (it needs pyarrow).
"""
EXPORT_EXAMPLES = """\
examples:
  distillbench export results/mine --format csv --out mine.csv  # one run, as CSV
  distillbench export results/ --format parquet --out all.parquet  # every run under results/
  distillbench export results/mine --layout tabarena --format csv --out tabarena.csv  # for TabArena
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    help = "write runs as one table (CSV or Parquet)"
    export = add_command(subparsers, "export", help, EXPORT_DESCRIPTION, EXPORT_EXAMPLES)
    export.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or folders of run folders")
    export.add_argument("--format", choices=FORMATS, default="csv", help="csv (default) or parquet")
    export.add_argument(
        "--out",
        type=validate.output_file_or_stdout,
        required=True,
        metavar="FILE",
        help="the file to write ('-': standard output, CSV only)",
    )
    export.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="records",
        help="records (default): one row per record; tabarena: TabArena's columns",
    )
    export.set_defaults(func=_export)


def table(runs: list[str | Path], layout: str = "records") -> pd.DataFrame:
    """The table of ``runs`` in ``layout`` (``distillbench.load`` is ``table(runs)``)."""
    from distillbench.benchmarks.reporting.frame import load, tabarena

    frame = load(runs)
    return tabarena(frame) if layout == "tabarena" else frame


def encoded(frame: pd.DataFrame, fmt: str) -> bytes:
    """The table as the bytes of a CSV or Parquet file."""
    if fmt == "parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise UserError(
                "--format parquet needs the package pyarrow, which is not installed "
                "(pip install pyarrow, or use --format csv)"
            )
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    return frame.to_csv(index=False).encode()


def _export(args: argparse.Namespace) -> int:
    from distillbench.files import write_atomic

    out = None if args.out == "-" else Path(args.out)
    if out is None and args.format == "parquet":
        raise UserError("--out -: Parquet is not written to standard output; name a file")
    if out is not None and (out.is_dir() or not out.parent.is_dir()):
        raise UserError(
            f"--out {out}: cannot write there ({'a folder' if out.is_dir() else 'no such folder ' + str(out.parent)})"
        )
    frame = table(args.runs, args.layout)
    data = encoded(frame, args.format)
    if out is None:
        sys.stdout.write(data.decode())
        return 0
    write_atomic(out, data)
    log.info(f"export: {out} ({len(frame)} rows, {len(frame.columns)} columns)")
    return 0
