"""The `distillbench` command: one subcommand per area, each registered by the module that owns it."""

from __future__ import annotations

import argparse
import importlib
import logging
import platform
import shlex
import signal
import sys
import traceback

from distillbench import __version__
from distillbench.errors import EXIT_BUG, EXIT_USAGE, Interrupted, UserError, signals_interrupt

LOG = logging.getLogger("distillbench")
EXAMPLES = """\
examples:
  distillbench run --suite smoke --seeds 1  # a first run, a minute or two
  distillbench report  # its report, in reports/<run_id>/
  distillbench compare quick results/mine --fail-on quality  # a run against the committed baseline
"""

# Each module has `register(subparsers)`, which adds its subcommand(s) and sets `func(args) -> int`.
# Modules are imported lazily by name so that `--help` does not load TensorFlow or PyTorch.
COMMAND_MODULES = [
    "distillbench.implementations.commands",
    "distillbench.datasets.commands",
    "distillbench.benchmarks.running.commands",
    "distillbench.benchmarks.reporting.commands",
    "distillbench.benchmarks.reporting.export",
    "distillbench.benchmarks.tracking.commands",
    "distillbench.env",
]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other user error; every
    command takes -v/-q; a command's epilog (its examples) is printed as written. The subcommands'
    parsers are of this class too. The values themselves are checked by the ``type=`` functions of
    ``distillbench.validate``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # On every command, so that `distillbench run -q` works as well as `distillbench -q run`.
        self.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=argparse.SUPPRESS,
            help="more diagnostics on stderr (the debug messages)",
        )
        self.add_argument(
            "-q",
            "--quiet",
            action="count",
            default=argparse.SUPPRESS,
            help="fewer diagnostics on stderr: -q warnings and errors only, -qq errors only",
        )

    def error(self, message: str):
        command = self.prog.removeprefix("distillbench").strip()
        message = " ".join(message.split())
        where = f"{command}: " if command else ""
        self.exit(EXIT_USAGE, f"distillbench: error: {where}{message} (see {self.prog} --help)\n")

    def format_help(self) -> str:
        epilog, self.epilog = self.epilog, None
        try:
            text = super().format_help()
        finally:
            self.epilog = epilog
        return text + (f"\n{epilog.strip()}\n" if epilog else "")


def add_command(subparsers, name: str, help: str, description: str, examples: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose description, like its examples, is printed with its own line breaks: ``help``
    is its line in `distillbench --help`."""
    formatter = argparse.RawDescriptionHelpFormatter
    return subparsers.add_parser(
        name, help=help, description=description, epilog=examples, formatter_class=formatter, **kwargs
    )


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a message is logged."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(verbosity: int) -> None:
    """The diagnostics of every module (the ``distillbench`` loggers) on stderr, as plain lines: info
    and above by default, debug with -v, warnings with -q, errors only with -qq. Results go to stdout
    and are not diagnostics."""
    levels = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}
    LOG.setLevel(levels[max(-2, min(1, verbosity))])
    LOG.propagate = False
    if not any(isinstance(h, _Stderr) for h in LOG.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)


def build_parser(parser_class: type[Parser] = Parser) -> argparse.ArgumentParser:
    """The `distillbench` parser; its subcommands' parsers are of ``parser_class`` too (``api`` raises
    a UserError where the command line exits 2)."""
    parser = parser_class(
        prog="distillbench",
        description="Knowledge-distillation benchmarks on tabular data, in PyTorch and TensorFlow/Keras. Exit "
        "status: 0 ok, 1 a check failed (compare: a regression; parity: a difference; run --strict: a "
        "failed job), 2 usage error, 3 internal error (a bug: its traceback is shown), 4 a run stopped by "
        "a disk or folder fault (--resume continues it), 130 or 143 interrupted (Ctrl-C, SIGTERM).",
        epilog=EXAMPLES,
    )
    parser.add_argument("--version", action="version", version=f"distillbench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
    LOG.debug(
        "distillbench %s, Python %s: %s",
        __version__,
        platform.python_version(),
        shlex.join(sys.argv[1:] if argv is None else argv),
    )
    with signals_interrupt():
        try:
            return int(args.func(args) or 0)
        except UserError as exc:
            print(f"distillbench: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt as exc:
            interrupted = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
            notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", []))
            print(f"distillbench: interrupted ({interrupted}){notes}", file=sys.stderr)
            return interrupted.exit_code
        except Exception:  # noqa: BLE001 - a bug: its traceback, and an exit status no command gives a verdict with
            traceback.print_exc()
            print(f"distillbench: internal error (the traceback above); exit {EXIT_BUG}", file=sys.stderr)
            return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
