"""`distillbench run`: parses its arguments and calls ``runner.run``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from distillbench import validate
from distillbench.cli import add_command
from distillbench.errors import EXIT_REGRESSION, UserError

log = logging.getLogger(__name__)

RUN_DESCRIPTION = """\
Run the benchmark: for every (dataset, seed, framework) job, train the teacher, the distilled
student (on the compressed teacher outputs) and the scratch student (labels only, same budget),
then measure each: test quality, training cost, latency at batch 1 (p50/p90/p99) and throughput at
a large batch, size. Records are appended to OUT/records.jsonl as each job ends; OUT/manifest.json
holds the config, seeds, code commit, package versions and machine.

A failed job is recorded with its reason and the run goes on. --resume continues a run (stopped,
interrupted, or with failed jobs) with the options it was started with: it runs every job not yet
done ok (the README's "What survives what"). Without network access, point --openml-source at a
pre-warmed OpenML cache.

Exit status: 0 the run finished (failed jobs recorded), 1 with --strict when any job or deployment
format failed, 2 usage error, 3 internal error, 4 stopped by a disk or folder fault (--resume
continues it), 130/143 interrupted (Ctrl-C, SIGTERM).

--fallback-suite builtin: when openml.org cannot be reached and neither the cache nor a source
holds any of the datasets asked for, run the `builtin` suite instead (datasets that ship with
scikit-learn, no download), say so, and record it in the manifest ("fallback") and in every
record ("dataset_source").
"""
RUN_EXAMPLES = """\
examples:
  distillbench run --suite smoke --seeds 1 --frameworks torch  # the smallest real run: 2 datasets, 1 framework
  distillbench run --suite quick --seeds 3 --out results/mine --resume  # continue it after a kill or Ctrl-C
  distillbench run --suite smoke --seeds 2 --folds 5  # cross-validation: 2 repeats of 5 folds
"""


def register(subparsers) -> None:
    from distillbench.datasets.commands import cache_options
    from distillbench.datasets.suites import list_suites
    from distillbench.implementations.frameworks import FRAMEWORKS
    from distillbench.implementations.spec import presets

    help = "run the benchmark and write a results folder"
    run = add_command(subparsers, "run", help, RUN_DESCRIPTION, RUN_EXAMPLES, parents=[cache_options()])
    which = run.add_mutually_exclusive_group()
    which.add_argument(
        "--suite",
        metavar="NAME|FILE",
        help=f"a suite ({', '.join(list_suites())}), a suite .toml file, or an OpenML suite openml/s/N "
        "(its tasks, as --tasks) (default: quick)",
    )
    which.add_argument(
        "--datasets",
        type=validate.comma_list(validate.dataset_id, "dataset"),
        metavar="ID,ID,...",
        help="OpenML dataset IDs instead of a suite",
    )
    which.add_argument(
        "--tasks",
        type=validate.comma_list(validate.task_id, "task"),
        metavar="ID,ID,...",
        help="OpenML task IDs instead of a suite: each task's dataset, target and cross-validation "
        "splits (its repeats and folds replace --seeds and --folds); read from the cache",
    )
    run.add_argument(
        "--frameworks",
        type=validate.comma_list(FRAMEWORKS, "framework"),
        default=",".join(FRAMEWORKS),
        help=f"comma-separated, each once, of {', '.join(FRAMEWORKS)} (default: all)",
    )
    run.add_argument(
        "--seeds",
        type=validate.seeds,
        default="3",
        metavar="N|A,B,...",
        help=f"seeds (splits and initialisations) per dataset: N for 0..N-1, N from 1 to "
        f"{validate.MAX_SEEDS} (default 3), or a list of seeds such as 0,3,7 (one seed K: K,)",
    )
    run.add_argument(
        "--folds",
        type=validate.folds,
        metavar="K",
        help="cross-validation: each seed (a repeat) splits each dataset into K folds (stratified for "
        "classification), one job per fold tested on it, validation carved from the rest; default: "
        "none, each seed's 60/20/20 holdout split",
    )
    run.add_argument(
        "--config",
        metavar="FILE|PRESET",
        help=f"pipeline config, a TOML file or a preset ({', '.join(presets())}); default: default",
    )
    run.add_argument("--out", type=validate.output_folder, metavar="DIR", help="run folder (default: results/RUN_ID)")
    run.add_argument(
        "--resume", action="store_true", help="continue the run in --out (same options): run its jobs not yet done ok"
    )
    run.add_argument(
        "--threads",
        type=validate.positive_int,
        metavar="N",
        help="threads for each framework, the same for both, at most the machine's cores except on a Dask "
        "--scheduler (default: all cores)",
    )
    run.add_argument(
        "--device", choices=("cpu", "gpu"), default="cpu", help="cpu (default) or gpu where the framework sees one"
    )
    run.add_argument(
        "--job-timeout",
        type=validate.positive_float,
        default=3600.0,
        metavar="S",
        help="seconds before a job is failed (default 3600)",
    )
    run.add_argument(
        "--timing-budget",
        type=validate.positive_float,
        default=2.0,
        metavar="S",
        help="seconds of single-row latency calls per model, at most 2000 calls and at least 200; "
        "throughput gets half (default 2)",
    )
    run.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when any job or deployment format failed (default: exit 0, the failures recorded)",
    )
    run.add_argument(
        "--no-deploy",
        dest="deploy",
        action="store_false",
        help="skip the deployment formats (ONNX under onnxruntime, int8) measured for every model by default",
    )
    run.add_argument(
        "--save-models",
        action="store_true",
        help="keep every model in OUT/models, in its own format and its deployment formats, each with a model card",
    )
    run.add_argument(
        "--save-predictions",
        action="store_true",
        help="keep every model's predictions on the test split in OUT/predictions (one Parquet file per job)",
    )
    run.add_argument(
        "--fallback-suite",
        metavar="NAME|FILE",
        help="run this suite instead (e.g. builtin: datasets bundled with scikit-learn) when openml.org "
        "cannot be reached and no cache or source holds any of the datasets asked for",
    )
    run.add_argument(
        "--fresh-process",
        action="store_true",
        help="a new worker process for every job (default: one per framework, reused; saves the framework import)",
    )
    run.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="local (default): jobs on this machine; dask: jobs on a Dask distributed cluster",
    )
    run.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="dask: the scheduler's address (e.g. tcp://host:8786); default: a LocalCluster started for the run",
    )
    run.add_argument(
        "--workers",
        type=validate.positive_int,
        metavar="N",
        help="local: jobs at once, threads divided among them (default 1); dask: LocalCluster worker "
        "processes (default: cores); both at most the machine's cores; or with --scheduler the "
        "workers to wait for before starting",
    )
    run.set_defaults(func=_run)


# The RunOptions fields that take the value of the option of the same name as it is.
SAME_NAMED_OPTIONS = (
    "resume",
    "device",
    "cache",
    "job_timeout",
    "fresh_process",
    "timing_budget",
    "deploy",
    "save_models",
    "save_predictions",
    "executor",
    "scheduler",
    "workers",
)


def run_options(args):
    """The ``runner.RunOptions`` of parsed `run` arguments, checked (the CLI's and ``distillbench.run``'s)."""
    from distillbench.benchmarks.running.fallback import suite_fallback
    from distillbench.benchmarks.running.runner import RunOptions, default_run_id
    from distillbench.datasets.sources import OpenMLCache
    from distillbench.datasets.suites import SuiteEntry, load_suite
    from distillbench.datasets.tasks import SUITE_PREFIX, openml_suite
    from distillbench.datasets.tasks import resolve as resolve_tasks
    from distillbench.implementations.spec import load_spec

    if args.datasets is not None:
        entries, suite = [SuiteEntry(i, None, "") for i in args.datasets], None
    elif args.tasks is not None:
        entries, suite = [SuiteEntry(0, task_id=t) for t in args.tasks], None
    elif (args.suite or "").startswith(SUITE_PREFIX):
        suite = openml_suite(args.suite, OpenMLCache.resolve(args.cache, args.openml_source))
        entries = suite.entries
    else:
        suite = load_suite(args.suite or "quick")
        entries = suite.entries
    if any(e.task_id is not None for e in entries):
        if args.folds is not None:
            raise UserError("--folds: OpenML tasks bring their own folds (and repeats): run them without --folds")
        entries = resolve_tasks(entries, OpenMLCache.resolve(args.cache, args.openml_source))
    cores = os.cpu_count() or 1
    for option, value in (("--threads", args.threads), ("--workers", args.workers)):
        # More threads than cores make every timing meaningless (training ran ~125x slower with 1000);
        # a scheduler's workers are other machines, whose cores this one cannot see.
        if value is not None and value > cores and not args.scheduler:
            raise UserError(f"{option} {value}: more than this machine's {cores} cores")
    if args.scheduler and args.executor != "dask":
        raise UserError("--scheduler needs --executor dask")
    if args.resume and not args.out:
        raise UserError("--resume needs --out, the run folder to continue")
    frameworks, spec = args.frameworks, load_spec(args.config)
    source, fallback = args.openml_source, None
    if args.fallback_suite:
        replacement = load_suite(args.fallback_suite)  # checked even when it is not needed
        given = ("--datasets", args.datasets) if args.datasets is not None else ("--tasks", args.tasks)
        asked = suite.name if suite else f"{given[0]} {','.join(map(str, given[1]))}"
        fallback = suite_fallback(entries, asked, replacement, args.cache, args.openml_source)
        if fallback:
            log.warning(f"distillbench: {fallback['message']}")
            suite, entries, source = replacement, replacement.entries, fallback["source"]
    suite_name = suite.name if suite else None
    options = RunOptions(
        entries=entries,
        suite=suite_name,
        frameworks=frameworks,
        # a run of tasks only: the seeds are the tasks' repeats (the manifest's plan says each task's)
        seeds=sorted({s for e in entries for s in _repeats(e, args)}) if _only_tasks(entries) else args.seeds,
        folds=args.folds,
        spec=spec,
        out=Path(args.out or Path("results") / default_run_id(suite_name)),
        source=source,
        fallback=fallback,
        **{name: getattr(args, name) for name in SAME_NAMED_OPTIONS},
    )
    if args.threads:
        options.threads = args.threads
    elif args.scheduler:
        options.threads = 1  # this machine's cores say nothing about the cluster's: --threads sets them
    return options


def _only_tasks(entries) -> bool:
    return all(e.task_id is not None for e in entries)


def _repeats(entry, args) -> range:
    from distillbench.datasets.sources import OpenMLCache
    from distillbench.datasets.tasks import load_task

    return range(load_task(entry.task_id, OpenMLCache.resolve(args.cache, args.openml_source)).repeats)


def _run(args) -> int:
    from distillbench.benchmarks.reporting.summary import format_table, summary_rows, warnings
    from distillbench.benchmarks.running.runner import run
    from distillbench.benchmarks.store.record import is_ok
    from distillbench.benchmarks.store.run_folder import read_run

    options = run_options(args)
    fallback = options.fallback
    out = run(options)
    records = read_run(out).records
    print(format_table(summary_rows(records)))
    for line in warnings(records):
        print(line)
    failed = sum(not is_ok(r) for r in records)
    print(
        f"\nresults: {out}/records.jsonl ({len(records)} records, {failed} failed); report: distillbench report {out}"
    )
    if fallback:
        print(f"note: {fallback['message']}")
    if args.strict and failed:
        log.error(
            f"distillbench: --strict: {failed} of {len(records)} records failed "
            f"(the reasons: distillbench report {out})"
        )
        return EXIT_REGRESSION
    return 0
