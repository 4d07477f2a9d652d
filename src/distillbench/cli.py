"""The `distillbench` command: one subcommand per area, each registered by the module that owns it."""

from __future__ import annotations

import argparse
import importlib
import sys

from distillbench import __version__
from distillbench.errors import UserError

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
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"distillbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("distillbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
