"""The `distillbench` command: one subcommand per area, each registered by the module that owns it."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import traceback

from distillbench import __version__
from distillbench.errors import EXIT_BUG, Interrupted, UserError, signals_interrupt

# Each module has `register(subparsers)`, which adds its subcommand(s) and sets `func(args) -> int`.
# Modules are imported lazily by name so that `--help` does not load TensorFlow or PyTorch.
COMMAND_MODULES = [
    "distillbench.implementations.commands",
    "distillbench.datasets.commands",
    "distillbench.benchmarks.running.commands",
    "distillbench.benchmarks.reporting.commands",
    "distillbench.benchmarks.tracking.commands",
    "distillbench.env",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillbench",
        description="Knowledge-distillation benchmarks on tabular data, in PyTorch and TensorFlow/Keras.",
    )
    parser.add_argument("--version", action="version", version=f"distillbench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
