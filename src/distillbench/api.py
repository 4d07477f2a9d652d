"""The Python API: ``run``, ``report``, ``compare`` and ``load``, for notebooks and scripts.

Each takes the command's options as keyword arguments named as the options' destinations
(``--timing-budget 0.05`` is ``timing_budget=0.05``, ``--no-deploy`` is ``deploy=False``, a list is a
comma-separated value: ``seeds=[0, 3, 7]``, ``frameworks=["torch"]``), parses them with the command's
own parser (the same checks; a bad value raises ``UserError`` with the command line's message) and
then calls the function the command calls. Nothing runs in a subprocess that the CLI would not run
in one.

    import distillbench
    out = distillbench.run(suite="smoke", seeds=1, frameworks=["torch"], out="results/nb")
    df = distillbench.load(out)          # a pandas DataFrame (benchmarks/reporting/frame.py)
    distillbench.report(out)             # shows itself in a notebook
"""

from __future__ import annotations

import argparse
import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillbench.cli import Parser, build_parser, configure_logging
from distillbench.errors import UserError
from distillbench.validate import seeds

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas as pd

    from distillbench.benchmarks.tracking.compare import Comparison

__all__ = ["ComparisonResult", "Report", "compare", "load", "report", "run"]


class _Parser(Parser):
    """The CLI's parser, raising a UserError where the command line prints one line and exits 2."""

    def error(self, message: str) -> Any:
        command = self.prog.removeprefix("distillbench").strip()
        raise UserError(f"{command}: {' '.join(message.split())}")


# Options that only make sense on the command line, and what to use instead.
_EXIT_STATUS_ONLY = {
    "run": {"strict": "the records say which jobs failed: load(out).status"},
    "compare": {"md": "use the result's .markdown", "json": "use the result's .as_json"},
}


def _subcommand(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices[command]


def command_line(command: str, positional: list[str], options: dict[str, Any]) -> list[str]:
    """The `distillbench COMMAND` arguments equivalent to ``options`` (keyword arguments named as
    the options' destinations) and the positional arguments: what the manifest records."""
    sub = _subcommand(build_parser(_Parser), command)
    by_dest = {a.dest: a for a in sub._actions if a.option_strings}
    argv = [command]
    for name, value in options.items():
        action = by_dest.get(name)
        if name in _EXIT_STATUS_ONLY.get(command, ()):
            raise TypeError(f"{command}(): {name} is for the command line; {_EXIT_STATUS_ONLY[command][name]}")
        if action is None:
            known = ", ".join(sorted(d for d in by_dest if d != "help"))
            raise TypeError(f"{command}() got an unexpected keyword argument {name!r} (known: {known})")
        flag = action.option_strings[-1]
        if value is None:
            continue
        if action.nargs == 0:  # a switch: store_true, store_false, count
            times = value if isinstance(action, argparse._CountAction) else int(value != action.default)
            argv += [flag] * int(times)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                argv += [flag, str(item)]
        elif isinstance(value, list | tuple):  # one seed alone is "K," (a bare K is a count)
            argv += [flag, ",".join(map(str, value)) + ("," if len(value) == 1 and action.type is seeds else "")]
        else:
            argv += [flag, str(value)]
    return argv + (["--", *positional] if positional else [])


def _parse(command: str, positional: list[str], options: dict[str, Any]) -> tuple[argparse.Namespace, list[str]]:
    argv = command_line(command, positional, options)
    args = build_parser(_Parser).parse_args(argv)
    configure_logging(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
    return args, argv


def run(**options: Any) -> Path:
    """`distillbench run` with these options (``suite``, ``datasets``, ``frameworks``, ``seeds``,
    ``config``, ``out``, ``resume``, ``deploy``, ...); returns the run folder. The manifest records
    the equivalent command line. As the command, failed jobs are recorded and do not raise."""
    from distillbench.benchmarks.running.commands import run_options
    from distillbench.benchmarks.running.runner import run as run_benchmark

    args, argv = _parse("run", [], options)
    planned = run_options(args)
    planned.command = ["distillbench", *argv]
    return run_benchmark(planned)


def load(paths: Iterable[str | Path] | str | Path, skip_damaged: bool = True) -> pd.DataFrame:
    """The runs in ``paths`` (run folders, or folders of run folders) as one DataFrame: the table of
    `distillbench export` (README, "Results as a table")."""
    from distillbench.benchmarks.reporting.frame import load as load_frame

    return load_frame(paths, skip_damaged)


@dataclass(frozen=True)
class Report:
    """A report written by ``report``: its folder, Markdown and HTML; it shows itself in a notebook
    (the self-contained HTML in a sandboxed frame of its own: its style stays inside, nothing in it runs)."""

    path: Path

    @property
    def markdown(self) -> str:
        return (self.path / "report.md").read_text()

    @property
    def html(self) -> str:
        return (self.path / "report.html").read_text()

    def _repr_markdown_(self) -> str:
        return self.markdown

    def _repr_html_(self) -> str:
        return (
            f'<iframe sandbox="" srcdoc="{html.escape(self.html, quote=True)}" title="{html.escape(str(self.path))}" '
            'style="width: 100%; height: 640px; border: 1px solid #ddd"></iframe>'
        )


def report(run_dir: str | Path | None = None, **options: Any) -> Report:
    """`distillbench report` (``out``: the report folder); the newest run under results/ without ``run_dir``."""
    from distillbench.benchmarks.reporting.commands import report_folder

    args, _ = _parse("report", [] if run_dir is None else [str(run_dir)], options)
    return Report(report_folder(args))


@dataclass(frozen=True)
class ComparisonResult:
    """A comparison made by ``compare``: ``comparison`` (``tracking.compare.Comparison``), judged
    under ``fail_on``; ``exit_code`` is the command's (1: a regression), ``text``, ``markdown`` and
    ``as_json`` what `compare` prints, writes with --md and with --json."""

    comparison: Comparison
    fail_on: str

    @property
    def exit_code(self) -> int:
        return self.comparison.exit_code(self.fail_on)

    @property
    def text(self) -> str:
        from distillbench.benchmarks.tracking.comparison_text import format_comparison

        return format_comparison(self.comparison, self.fail_on)

    @property
    def markdown(self) -> str:
        from distillbench.benchmarks.tracking.comparison_text import format_comparison

        return format_comparison(self.comparison, self.fail_on, markdown=True)

    @property
    def as_json(self) -> dict:
        from distillbench.benchmarks.tracking.comparison_text import comparison_json

        return comparison_json(self.comparison, self.fail_on)

    def _repr_markdown_(self) -> str:
        return self.markdown


def compare(baseline: str | Path, candidate: str | Path, **options: Any) -> ComparisonResult:
    """`distillbench compare BASELINE CANDIDATE` with its options (``fail_on``, ``k``, ``floor``,
    ``unpaired``, ``timing_threshold``, ``alpha``); nothing is written."""
    from distillbench.benchmarks.tracking.commands import comparison_of

    args, _ = _parse("compare", [str(baseline), str(candidate)], options)
    return ComparisonResult(comparison_of(args), args.fail_on)
