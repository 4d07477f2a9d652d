"""`distillbench datasets list|info|prefetch`."""

from __future__ import annotations

import argparse
import json

from distillbench import validate
from distillbench.cli import add_command
from distillbench.datasets.sources import CACHE_ENV, DEFAULT_CACHE, SOURCE_ENV, OpenMLCache
from distillbench.datasets.suites import list_suites, load_suite
from distillbench.errors import UserError

DESCRIPTION = f"""\
The benchmark's datasets: suites of OpenML dataset IDs, loaded through the openml package.

Data is read from a writable OpenML cache (--cache, ${CACHE_ENV}, default {DEFAULT_CACHE}).
Without network access, name a pre-warmed cache as a source (--openml-source, ${SOURCE_ENV}, e.g.
../shared/openml-cache): its entries are copied into the writable cache and it is never written to.
"""
DATASETS_EXAMPLES = """\
examples:
  distillbench datasets list  # the shipped suites
  distillbench datasets list --suite quick --openml-source ../shared/openml-cache  # where its data is
  distillbench datasets info 61 --json  # one dataset described
"""
LIST_EXAMPLES = """\
examples:
  distillbench datasets list  # the shipped suites
  distillbench datasets list --suite quick --openml-source ../shared/openml-cache  # where its data is
"""
INFO_EXAMPLES = """\
examples:
  distillbench datasets info 61  # iris: rows, features by type, classes, sha256
  distillbench datasets info 531 --json --openml-source ../shared/openml-cache
"""
PREFETCH_EXAMPLES = """\
examples:
  distillbench datasets prefetch --suite quick --cache ~/openml-cache  # online; copy the folder to offline machines
  distillbench datasets prefetch --suite my-suite.toml --cache ~/openml-cache
"""


def cache_options() -> argparse.ArgumentParser:
    """--cache and --openml-source, as a parent parser for every command that reads datasets."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--cache",
        type=validate.output_folder,
        metavar="DIR",
        help=f"writable OpenML cache (default: ${CACHE_ENV}, else {DEFAULT_CACHE})",
    )
    where.add_argument(
        "--openml-source",
        metavar="DIR",
        help=f"read-only, pre-warmed OpenML cache to copy entries from, never written to (default: ${SOURCE_ENV})",
    )
    return where


def register(subparsers: argparse._SubParsersAction) -> None:
    where = cache_options()
    help = "list, inspect and prefetch the OpenML datasets of the suites"
    parser = add_command(subparsers, "datasets", help, DESCRIPTION, DATASETS_EXAMPLES)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    show = actions.add_parser(
        "list",
        epilog=LIST_EXAMPLES,
        parents=[where],
        help="list the suites, or the datasets of one suite",
        description="Without --suite, list the shipped suites. With --suite, list its datasets, each with "
        "where its data is: 'cache', 'source' or 'missing' (run `datasets prefetch` where online).",
    )
    show.add_argument(
        "--suite", metavar="NAME|FILE", help=f"a shipped suite ({', '.join(list_suites())}) or a suite .toml file"
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(func=_list)

    info = actions.add_parser(
        "info",
        epilog=INFO_EXAMPLES,
        parents=[where],
        help="load one dataset and describe it",
        description="Load an OpenML dataset as the benchmark does and print its name, task, target, rows, "
        "features by type, classes, missing values, data file, source and sha256 checksum.",
    )
    info.add_argument("dataset_id", type=validate.dataset_id, metavar="ID", help="OpenML dataset ID")
    info.add_argument("--target", help="target column (default: the dataset's default target)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    prefetch = actions.add_parser(
        "prefetch",
        epilog=PREFETCH_EXAMPLES,
        parents=[where],
        help="download a suite into a cache, for machines that are offline",
        description="Download every dataset of a suite (description, features, qualities, data) into the "
        "cache and check that it loads. The cache can then be copied to machines without network access "
        "and named there with --openml-source or --cache.",
    )
    prefetch.add_argument("--suite", required=True, metavar="NAME|FILE", help="a shipped suite or a suite .toml file")
    prefetch.set_defaults(func=_prefetch)


def _cache(args: argparse.Namespace) -> OpenMLCache:
    return OpenMLCache.resolve(args.cache, args.openml_source)


def _list(args: argparse.Namespace) -> int:
    if args.suite is None:
        suites = [load_suite(name) for name in list_suites()]
        rows = [{"suite": s.name, "datasets": len(s.entries), "description": s.description} for s in suites]
    else:
        cache = _cache(args)
        rows = [
            {"dataset_id": e.dataset_id, "target": e.target, "data": cache.status(e.dataset_id), "note": e.note}
            for e in load_suite(args.suite).entries
        ]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        _print_table(rows)
    return 0


def _info(args: argparse.Namespace) -> int:
    from distillbench.datasets.load import load_dataset  # imports pandas: not needed for --help

    summary = load_dataset(args.dataset_id, target=args.target, cache=_cache(args)).summary()
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for key, value in summary.items():
            print(f"{key:21} {_text(value)}")
    return 0


def _prefetch(args: argparse.Namespace) -> int:
    from distillbench.datasets.load import load_dataset

    cache, suite = _cache(args), load_suite(args.suite)
    failed = 0
    for entry in suite.entries:
        try:
            cache.fetch(entry.dataset_id, metadata=True)
            raw = load_dataset(entry.dataset_id, target=entry.target, cache=cache)
            print(f"ok      {entry.dataset_id:>6}  {raw.name}: {raw.task}, {len(raw.X)} rows", flush=True)
        except UserError as exc:
            failed += 1
            print(f"FAILED  {entry.dataset_id:>6}  {exc}", flush=True)
    if failed:
        raise UserError(
            f"{failed} of {len(suite.entries)} datasets of suite {suite.name} could not be fetched (see above)"
        )
    print(f"suite {suite.name}: {len(suite.entries)} datasets in {cache.root}")
    return 0


def _text(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{count} {kind}" for kind, count in value.items())
    if isinstance(value, list):
        return "; ".join(map(str, value))
    return "" if value is None else str(value)


def _print_table(rows: list[dict]) -> None:
    columns = list(rows[0])
    cells = [[_text(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    for line in [columns, *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
