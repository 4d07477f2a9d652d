"""`distillbench run` and `distillbench report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distillbench.errors import UserError

RUN_DESCRIPTION = """\
Run the benchmark: for every (dataset, seed, framework) job, train the teacher, the distilled
student (on the compressed teacher outputs) and the scratch student (labels only, same budget),
then measure each: test quality, training cost, latency at batch 1 (p50/p90/p99) and throughput at
a large batch, size. Records are appended to OUT/records.jsonl as each job ends; OUT/manifest.json
holds the config, seeds, code commit, package versions and machine.

A failed job is recorded with its reason and the run goes on. --resume skips the jobs already
recorded as ok. Without network access, point --openml-source at a pre-warmed OpenML cache.

--fallback-suite builtin: when openml.org cannot be reached and neither the cache nor a source
holds any of the datasets asked for, run the `builtin` suite instead (datasets that ship with
scikit-learn, no download), say so, and record it in the manifest ("fallback") and in every
record ("dataset_source").
"""

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


def register(subparsers) -> None:
    from distillbench.datasets.commands import cache_options
    from distillbench.datasets.suites import list_suites
    from distillbench.implementations.frameworks import FRAMEWORKS
    from distillbench.implementations.spec import presets

    run = subparsers.add_parser("run", help="run the benchmark and write a results folder", description=RUN_DESCRIPTION,
                                parents=[cache_options()], formatter_class=argparse.RawDescriptionHelpFormatter)
    which = run.add_mutually_exclusive_group()
    which.add_argument("--suite", metavar="NAME|FILE", help=f"a suite ({', '.join(list_suites())}) or a suite .toml file (default: quick)")
    which.add_argument("--datasets", metavar="ID,ID,...", help="OpenML dataset IDs instead of a suite")
    run.add_argument("--frameworks", default=",".join(FRAMEWORKS), help=f"comma-separated, of {', '.join(FRAMEWORKS)} (default: all)")
    run.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds (splits and initialisations) 0..N-1 per dataset (default 3)")
    run.add_argument("--config", metavar="FILE|PRESET", help=f"pipeline config, a TOML file or a preset ({', '.join(presets())}); default: default")
    run.add_argument("--out", metavar="DIR", help="run folder (default: results/<run_id>)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out, skipping jobs recorded as ok")
    run.add_argument("--threads", type=int, metavar="N", help="threads for each framework, the same for both (default: all cores)")
    run.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="cpu (default) or gpu where the framework sees one")
    run.add_argument("--job-timeout", type=float, default=3600.0, metavar="S", help="seconds before a job is failed (default 3600)")
    run.add_argument("--timing-budget", type=float, default=2.0, metavar="S",
                     help="seconds of single-row latency calls per model, at most 2000 calls and at least 200; "
                          "throughput gets half (default 2)")
    run.add_argument("--no-deploy", dest="deploy", action="store_false",
                     help="skip the deployment formats (ONNX under onnxruntime, int8) measured for every model by default")
    run.add_argument("--fallback-suite", metavar="NAME|FILE",
                     help="run this suite instead (e.g. builtin: datasets bundled with scikit-learn) when openml.org "
                          "cannot be reached and no cache or source holds any of the datasets asked for")
    run.add_argument("--fresh-process", action="store_true",
                     help="a new worker process for every job (default: one per framework, reused; saves the framework import)")
    run.add_argument("--executor", choices=("local", "dask"), default="local",
                     help="local (default): jobs on this machine; dask: jobs on a Dask distributed cluster")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="dask: the scheduler's address (e.g. tcp://host:8786); default: a LocalCluster started for the run")
    run.add_argument("--workers", type=int, metavar="N",
                     help="local: jobs at once, threads divided among them (default 1); dask: LocalCluster worker "
                          "processes (default: cores), or with --scheduler the workers to wait for before starting")
    run.set_defaults(func=_run)

    report = subparsers.add_parser("report", help="write the report of a run (Markdown, HTML, figures, tables)",
                                   description=REPORT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run folder (default: the newest under results/)")
    report.add_argument("--out", metavar="DIR", help="report folder (default: reports/<run_id>)")
    report.set_defaults(func=_report)


def _run(args) -> int:
    from distillbench.benchmarks.store.run_folder import latest_records, read_records
    from distillbench.benchmarks.running.runner import RunOptions, default_run_id, run
    from distillbench.benchmarks.reporting.summary import format_table, summary_rows
    from distillbench.datasets.suites import SuiteEntry, load_suite
    from distillbench.implementations.frameworks import parse_frameworks
    from distillbench.implementations.spec import load_spec

    if args.datasets:
        try:
            entries = [SuiteEntry(int(i), None, "") for i in args.datasets.split(",") if i.strip()]
        except ValueError:
            raise UserError(f"--datasets {args.datasets!r}: expected comma-separated OpenML IDs") from None
        suite = None
    else:
        suite = load_suite(args.suite or "quick")
        entries = suite.entries
    if args.seeds <= 0:
        raise UserError(f"--seeds {args.seeds}: must be at least 1")
    if args.threads is not None and args.threads <= 0:
        raise UserError(f"--threads {args.threads}: must be at least 1")
    if args.timing_budget <= 0 or args.job_timeout <= 0:
        raise UserError("--timing-budget and --job-timeout must be positive")
    if args.workers is not None and args.workers <= 0:
        raise UserError(f"--workers {args.workers}: must be at least 1")
    if args.scheduler and args.executor != "dask":
        raise UserError("--scheduler needs --executor dask")
    if args.resume and not args.out:
        raise UserError("--resume needs --out, the run folder to continue")
    frameworks, spec = parse_frameworks(args.frameworks), load_spec(args.config)
    source, fallback = args.openml_source, None
    if args.fallback_suite:
        replacement = load_suite(args.fallback_suite)  # checked even when it is not needed
        fallback = _fallback(entries, suite.name if suite else f"--datasets {args.datasets}", replacement, args)
        if fallback:
            print(f"distillbench: {fallback['message']}", file=sys.stderr, flush=True)
            suite, entries, source = replacement, replacement.entries, fallback["source"]
    suite_name = suite.name if suite else None
    options = RunOptions(
        entries=entries, suite=suite_name, frameworks=frameworks,
        seeds=list(range(args.seeds)), spec=spec,
        out=Path(args.out or Path("results") / default_run_id(suite_name)), resume=args.resume,
        device=args.device, cache=args.cache, source=source, job_timeout=args.job_timeout,
        fresh_process=args.fresh_process, timing_budget=args.timing_budget, deploy=args.deploy, fallback=fallback,
        executor=args.executor, scheduler=args.scheduler, workers=args.workers,
    )
    if args.threads:
        options.threads = args.threads
    elif args.scheduler:
        options.threads = 1  # this machine's cores say nothing about the cluster's: --threads sets them
    out = run(options)
    records = latest_records(read_records(out))
    print(format_table(summary_rows(records)))
    failed = sum(r["status"] != "ok" for r in records)
    print(f"\nresults: {out}/records.jsonl ({len(records)} records, {failed} failed); report: distillbench report {out}")
    if fallback:
        print(f"note: {fallback['message']}")
    return 0


def _fallback(entries, asked: str, replacement, args) -> dict | None:
    """The fallback to record, when none of `entries` can be loaded because openml.org cannot be
    reached and neither the cache nor a source holds any of them; else None (the run goes as asked)."""
    from distillbench.datasets.builtin import ensure_builtin_source
    from distillbench.datasets.sources import SOURCE_ENV, OpenMLCache

    cache = OpenMLCache.resolve(args.cache, args.openml_source)
    if any(cache.status(entry.dataset_id) != "missing" for entry in entries):
        return None
    problem = cache.unreachable()
    if problem is None:
        return None
    source = ensure_builtin_source(cache.root)  # the builtin source, used whatever the fallback suite
    what = "datasets bundled with scikit-learn" if replacement.name == "builtin" else replacement.description
    named = asked if asked.startswith("--") else f"suite {asked}"
    holds = (f"neither the cache {cache.root} nor the source {cache.source} holds any dataset of {named}"
             if cache.source else f"no source is set and the cache {cache.root} holds no dataset of {named}")
    return {
        "from": asked, "to": replacement.name, "source": str(source), "reason": f"{problem}; {holds}",
        "requested": [entry.dataset_id for entry in entries],
        "message": f"{problem.split(' (')[0]} and no OpenML cache holds {named}: running suite {replacement.name} "
                   f"({what}) instead; to run {named} offline, point --openml-source or {SOURCE_ENV} at an "
                   f"OpenML cache (e.g. ../shared/openml-cache, or one made where online with "
                   f"`distillbench datasets prefetch --suite NAME --cache DIR`)",
    }


def newest_run(results: Path = Path("results")) -> Path:
    runs = sorted((p for p in results.glob("*/manifest.json")), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"no run folder under {results}/: run `distillbench run` first, or name RUN_DIR")
    return runs[-1].parent


def _report(args) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else newest_run()
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    from distillbench.benchmarks.reporting.report import write_report  # scipy and matplotlib: only once there is work

    out = write_report(run_dir, Path(args.out) if args.out else None)
    print(f"report: {out / 'report.html'} and {out / 'report.md'} (figures/, tables/ beside them)", file=sys.stderr)
    return 0
