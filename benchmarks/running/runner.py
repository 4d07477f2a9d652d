"""The driver of `distillbench run`: plans the (dataset, seed, fold, framework) jobs, prepares the data,
hands the jobs to an executor (``executors.py``), and appends the records as each job ends, in
whatever order the jobs end. The driver is the only writer of the run folder, whatever the executor.

By default jobs run one at a time on this machine, so nothing else of ours runs while a job is
timed. Each framework has its own worker process (the two frameworks never share one), started once
and reused across that framework's jobs to spare a framework import per job (TensorFlow takes
seconds); ``--fresh-process`` starts a new worker for every job instead. ``--workers N`` runs N jobs
at once, ``--executor dask`` runs them on a Dask cluster (the manifest records the concurrency).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from distillbench.benchmarks.running.executors import make_executor, worker_env
from distillbench.benchmarks.running.job import Job, failed_records
from distillbench.benchmarks.running.keep import MODELS, PREDICTIONS
from distillbench.benchmarks.running.quiet import QUIET, overlaps, read_intervals
from distillbench.benchmarks.store.record import OK, SCHEMA_VERSION, is_ok, job_key
from distillbench.benchmarks.store.run_folder import (
    COMPLETE,
    INTERRUPTED,
    MANIFEST,
    RECORDS,
    RUNNING,
    STOPPED,
    RunFolder,
    account,
    latest_records,
    planned_splits,
    read_lines,
    read_manifest,
)
from distillbench.datasets.suites import SuiteEntry
from distillbench.env import environment
from distillbench.errors import RunFault, UserError, signals_deferred
from distillbench.implementations.roles import REFERENCE, REFERENCES
from distillbench.implementations.spec import PipelineSpec

log = logging.getLogger(__name__)
MEASURED_KEYS = ("train_seconds", "compress_seconds", "measure_seconds")


@dataclass
class RunOptions:
    entries: list[SuiteEntry]
    suite: str | None
    frameworks: list[str]
    seeds: list[int]
    spec: PipelineSpec
    out: Path
    folds: int | None = None  # K: each seed's K-fold, one job per fold; None: each seed's holdout split
    resume: bool = False
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    device: str = "cpu"
    cache: str | None = None
    source: str | None = None
    job_timeout: float = 3600.0
    fresh_process: bool = False
    timing_budget: float = 2.0
    deploy: bool = True  # also measure every model in its deployment formats (ONNX, int8)
    save_models: bool = False  # keep every model, each with its card, in OUT/models (keep.py)
    save_predictions: bool = False  # keep every model's test predictions in OUT/predictions
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    fallback: dict | None = None  # set when this run replaces a suite that could not be loaded (fallback.py)
    executor: str = "local"  # local | dask (executors.py)
    scheduler: str | None = None  # dask: a scheduler's address; None: a LocalCluster for the run
    workers: int | None = None  # jobs at once (local, default 1) or LocalCluster workers (default: cores)


def default_run_id(suite: str | None) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{suite or 'custom'}"


def check_writable(out: Path, resume: bool) -> None:
    """Refuse an unusable --out before anything is written."""
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out}: exists and is not a folder")
        if not os.access(out, os.W_OK):
            raise UserError(f"--out {out}: not writable")
        if ((out / RECORDS).exists() or (out / MANIFEST).exists()) and not resume:
            raise UserError(f"--out {out}: already holds a run; use --resume to continue it, or another --out")
        return
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out {out}: cannot be created ({parent} is not a folder)")
    if not os.access(parent, os.W_OK):
        raise UserError(f"--out {out}: cannot be created ({parent} is not writable)")


class Progress:
    """One line per finished job on stderr (updated in place on a terminal), with an ETA from the wall
    time per finished job so far: right however many jobs run at once and in whatever order they end."""

    def __init__(self, total: int):
        self.total, self.done, self.started = total, 0, time.perf_counter()
        self.tty = sys.stderr.isatty()
        self._line("ETA --", "")

    def _line(self, eta: str, what: str) -> None:
        bar = "#" * int(20 * self.done / max(self.total, 1))
        line = f"[{bar:<20}] {self.done}/{self.total} {eta}  {what}"
        if self.tty and log.isEnabledFor(logging.INFO):  # one line redrawn in place; -q silences it like the rest
            print("\r" + line.ljust(110), end="", file=sys.stderr, flush=True)
        elif not self.tty:
            log.info(line)

    def finish(self, job: Job, name: str, status: str, reason: str | None) -> None:
        self.done += 1
        eta = _duration((time.perf_counter() - self.started) / self.done * (self.total - self.done))
        fold = "" if job.fold is None else f" fold {job.fold}"
        self._line(
            f"ETA {eta}", f"done: {name} (dataset {job.dataset_id}) seed {job.seed}{fold} {job.framework} {status}"
        )
        if status != OK:
            self.close()
            log.warning(f"  failed: {reason}")

    def close(self) -> None:
        if self.tty and log.isEnabledFor(logging.INFO):
            print(file=sys.stderr)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def prepare_datasets(options: RunOptions) -> dict[int, dict]:
    """Load and prepare every (dataset, seed, fold) once in the driver, which fills the on-disk cache
    the workers read. Returns per dataset: name, task, checksum, or the error that fails its jobs."""
    from distillbench.datasets.prepare import get_prepared
    from distillbench.datasets.sources import OpenMLCache

    cache = OpenMLCache.resolve(options.cache, options.source)
    info = {}
    for entry in options.entries:
        splits = _splits(options, entry)
        task = {} if entry.task_id is None else {"openml_task": _task(entry, cache)}
        log.info(f"preparing dataset {entry.dataset_id} ({len(splits)} splits)")
        try:
            for seed, fold, folds in splits:
                prepared = get_prepared(
                    entry.dataset_id,
                    seed,
                    target=entry.target,
                    cache=cache,
                    fold=fold,
                    folds=folds,
                    task=entry.task_id,
                )
            info[entry.dataset_id] = {
                "id": entry.dataset_id,
                "name": prepared.name,
                "task": prepared.task,
                "target": prepared.target,
                "checksum": prepared.checksum,
                "note": entry.note,
                "rows": {"train": len(prepared.y_train), "val": len(prepared.y_val), "test": len(prepared.y_test)},
                "features": prepared.x_train.shape[1],
                "notes": prepared.notes,
                **task,
            }
            log.debug(
                f"  dataset {entry.dataset_id}: {prepared.name}, {prepared.task}, target {prepared.target}, "
                f"rows {info[entry.dataset_id]['rows']}, {prepared.x_train.shape[1]} features"
            )
        except UserError as exc:
            info[entry.dataset_id] = {"id": entry.dataset_id, "error": str(exc), "note": entry.note, **task}
            log.warning(f"  dataset {entry.dataset_id} fails its jobs: {exc}")
    if all("error" in d for d in info.values()):
        raise UserError(
            next(iter(info.values()))["error"]
            if len(info) == 1
            else f"none of the {len(info)} datasets could be loaded (first: {next(iter(info.values()))['error']})"
        )
    return info


def _task(entry: SuiteEntry, cache) -> dict:
    """What the manifest says of a task entry's task: its ID and its repeats x folds."""
    from distillbench.datasets.tasks import load_task

    task = load_task(entry.task_id, cache)  # type: ignore[arg-type]
    return {"id": task.task_id, "repeats": task.repeats, "folds": task.folds, "splits_sha256": task.splits_sha256}


def _splits(options: RunOptions, entry: SuiteEntry) -> list[tuple[int, int | None, int | None]]:
    """(seed, fold, folds) of each split of an entry: ``store.run_folder.planned_splits``."""
    from distillbench.datasets.sources import OpenMLCache

    dataset: dict = {"id": entry.dataset_id}
    if entry.task_id is not None:
        dataset["openml_task"] = _task(entry, OpenMLCache.resolve(options.cache, options.source))
    return planned_splits({"seeds": options.seeds, "folds": options.folds}, dataset)


def run(options: RunOptions) -> Path:
    """Run the benchmark (or, with ``resume``, its jobs not yet done ok); returns the run folder.
    Bad input raises UserError before anything is written. The manifest keeps an account of every
    invocation on the folder and ends ``complete``, ``interrupted`` (a signal: Interrupted is raised)
    or ``failed`` (the folder took no more writes: RunFault is raised), never ``running``."""
    out = options.out
    ids = [entry.dataset_id for entry in options.entries]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:  # jobs, records and --resume are keyed by dataset ID: one entry per dataset in a run
        raise UserError(
            f"dataset {', '.join(map(str, twice))} listed more than once (e.g. with two targets): "
            "a run holds each dataset once; run the other target in another run"
        )
    check_writable(out, options.resume)
    previous = read_manifest(out) if options.resume and (out / MANIFEST).exists() else None
    if options.resume and previous is None and (out / RECORDS).exists():
        raise UserError(f"--resume {out}: the folder has {RECORDS} but no {MANIFEST}: it cannot be resumed")
    datasets = prepare_datasets(options)
    if previous is not None:
        _check_same_plan(previous, options, datasets)

    try:
        out.mkdir(parents=True, exist_ok=True)
        folder = RunFolder(out)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot be written ({exc.strerror or exc})") from None
    try:
        executor = make_executor(options, out / "worker.log")
    except BaseException as exc:
        folder.close()
        if isinstance(exc, OSError):
            raise UserError(f"--out {out}: cannot be written ({exc.strerror or exc})") from None
        raise
    try:
        written = _records_so_far(folder)
        manifest = _manifest(options, out, previous, datasets, executor)
        todo = _begin(options, folder, manifest, written, executor.threads)
    except OSError as exc:
        executor.close(now=True)
        folder.close()
        raise RunFault(f"{out}: cannot be written ({exc.strerror or exc})") from None
    except BaseException:
        executor.close(now=True)
        folder.close()
        raise
    appended, ending = _run_jobs(options, folder, executor, manifest, datasets, todo, written)
    with signals_deferred():  # a second signal must not cut this short
        executor.close(now=ending is not None)
        marked = _end(folder, manifest, written + appended, ending)
        folder.close()
    resume = f"`distillbench run --resume --out {out}`"
    if isinstance(ending, KeyboardInterrupt):
        ending.add_note(f"{marked}; {resume} continues it")
    elif isinstance(ending, RunFault):
        raise RunFault(f"{ending}; {marked}; when the folder takes writes again, {resume} continues it") from None
    elif ending is None and manifest["status"] != COMPLETE:  # every job ran, but the manifest says otherwise
        raise RunFault(f"every job ran, but {marked}; {resume} marks it complete") from None
    if ending is not None:
        raise ending
    return out


def _records_so_far(folder: RunFolder) -> list[dict]:
    """The records already in the folder (resuming), after cutting off a partial last line and
    moving damaged lines aside (their jobs then count as incomplete, and run again)."""
    folder.truncate_partial_line()
    written, damaged = read_lines(folder.path, skip_damaged=True)
    if damaged:
        kept = folder.set_aside(damaged)
        log.warning(
            f"distillbench: warning: moved {len(damaged)} damaged line(s) of {folder.path / RECORDS} to "
            f"{kept} (kept there); their jobs run again"
        )
    return written


def _begin(options: RunOptions, folder: RunFolder, manifest: dict, written: list[dict], threads: int) -> list[Job]:
    """Open this invocation in the manifest and write it; the jobs it runs: those not done ok, first
    each (dataset, seed, fold)'s reference job, then the frameworks' jobs (which get its results)."""
    jobs = [
        Job(
            entry.dataset_id,
            seed,
            framework,
            options.spec.to_dict(),
            entry.target,
            threads,
            options.device,
            options.cache,
            options.source,
            options.timing_budget,
            options.deploy,
            quiet=str((folder.path / QUIET).resolve()),
            models=str((folder.path / MODELS).resolve()) if options.save_models else None,
            predictions=str((folder.path / PREDICTIONS).resolve()) if options.save_predictions else None,
            fold=fold,
            folds=folds,
            task=entry.task_id,
        )
        for framework in (REFERENCE, *options.frameworks)
        for entry in options.entries
        for seed, fold, folds in _splits(options, entry)
    ]
    done = account(manifest, written)[1].ok
    todo = [job for job in jobs if job.key not in done]
    manifest["invocations"].append(
        {
            "invocation": len(manifest["invocations"]) + 1,
            "command": options.command,
            "started": time.time(),
            "finished": None,
            "status": RUNNING,
            "reason": None,
            "environment": manifest["environment"],
            "jobs": {"to_run": len(todo), "skipped_as_done": len(jobs) - len(todo), "ok": 0, "failed": 0},
        }
    )
    folder.write_manifest(_account(manifest, written))
    log.info(f"run {manifest['run_id']}: {len(todo)} jobs ({len(jobs) - len(todo)} already done) -> {folder.path}")
    log.debug(f"executor: {manifest['worker']}; threads per job {threads}")
    return todo


def _run_jobs(
    options: RunOptions,
    folder: RunFolder,
    executor,
    manifest: dict,
    datasets: dict[int, dict],
    todo: list[Job],
    written: list[dict],
) -> tuple[list[dict], BaseException | None]:
    """Run the jobs and append each one's records as it ends; the records appended, and the exception
    that ended the invocation early (None when every job ran): Interrupted (a signal), RunFault (a
    write failed: the run stops there) or a bug's."""
    invocation = manifest["invocations"][-1]
    progress = Progress(len(todo))
    wall = time.perf_counter()
    appended, reported, ending = [], set(), None

    def execute(jobs: list[Job]) -> None:
        no_data = (
            (job, failed_records(job, datasets[job.dataset_id]["error"], time.time()))
            for job in jobs
            if "error" in datasets[job.dataset_id]
        )
        for job, records in itertools.chain(
            no_data, executor.run(j for j in jobs if "error" not in datasets[j.dataset_id])
        ):
            if job.key in reported:  # a job reported twice (e.g. a worker presumed lost came back): written once
                continue
            reported.add(job.key)
            for record in records:
                record.update(run_id=manifest["run_id"], invocation=invocation["invocation"], job_records=len(records))
            try:
                folder.append(records)
            except OSError as exc:
                why = exc.strerror or exc
                raise RunFault(f"writing {folder.path / RECORDS}: {why}; the run stopped there") from None
            appended.extend(records)
            progress.finish(job, datasets[job.dataset_id].get("name", "?"), records[0]["status"], records[0]["error"])

    try:
        execute([job for job in todo if job.framework == REFERENCE])
        references = _references(written + appended)  # this invocation's and an earlier one's
        execute([replace(job, references=references.get(job.key[:3])) for job in todo if job.framework != REFERENCE])
        invocation["status"] = COMPLETE
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM (errors.Interrupted)
        ending, invocation["status"], invocation["reason"] = exc, INTERRUPTED, f"interrupted ({exc or 'SIGINT'})"
    except BaseException as exc:  # noqa: BLE001 - RunFault, or a bug (whose traceback the CLI shows)
        ending, invocation["status"], invocation["reason"] = exc, STOPPED, str(exc) or type(exc).__name__
    progress.close()
    invocation["finished"] = time.time()
    _measure_overhead(manifest, invocation, appended, time.perf_counter() - wall, folder.path)
    return appended, ending


def _references(records: list[dict]) -> dict[tuple, dict[str, float]]:
    """Per (dataset, seed, fold), the primary metric of each reference role that ended ok."""
    out: dict[tuple, dict[str, float]] = {}
    for r in latest_records(records):
        if r["framework"] == REFERENCE and is_ok(r) and r["role"] in REFERENCES:
            out.setdefault(job_key(r)[:3], {})[r["role"]] = r["metrics"][r["primary_metric"]]
    return out


def _end(folder: RunFolder, manifest: dict, written: list[dict], ending: BaseException | None) -> str:
    """Write the manifest with this invocation's end; what it says, for the user."""
    try:
        folder.write_manifest(_account(manifest, written))
    except OSError as exc:
        manifest["status"] = RUNNING  # as the file still says
        return (
            f"{folder.path / MANIFEST} could not be updated either ({exc.strerror or exc}): it still says "
            "running, which every command reads as interrupted"
        )
    return f"the run is marked {manifest['status']} in {folder.path / MANIFEST}"


def _check_same_plan(previous: dict, options: RunOptions, datasets: dict[int, dict]) -> None:
    """--resume continues the run as it was planned: the same datasets (and targets), seeds, folds,
    frameworks, deployment formats, config, and what it keeps (models, predictions: off in a run
    from before they could be kept); a one-line UserError says what differs."""
    before = {d["id"]: d.get("target") for d in previous["datasets"]}
    now = {i: d.get("target") for i, d in datasets.items()}
    differences = []
    if sorted(before) != sorted(now):
        differences.append(f"datasets {_ids(now)}, not {_ids(before)}")
    else:
        targets = [
            f"dataset {i} target {now[i]!r}, not {before[i]!r}"
            for i in now
            if None not in (now[i], before[i]) and now[i] != before[i]
        ]
        differences += targets
        tasks_before = {d["id"]: (d.get("openml_task") or {}).get("id") for d in previous["datasets"]}
        differences += [
            f"dataset {i} task {_shown((d.get('openml_task') or {}).get('id'))}, not {_shown(tasks_before[i])}"
            for i, d in datasets.items()
            if "error" not in d and (d.get("openml_task") or {}).get("id") != tasks_before[i]
        ]
    for name, value in (
        ("seeds", options.seeds),
        ("folds", options.folds),
        ("frameworks", options.frameworks),
        ("deploy", options.deploy),
        ("config", options.spec.to_dict()),
        ("save_models", options.save_models),
        ("save_predictions", options.save_predictions),
    ):
        before = previous.get(name, False if name.startswith("save_") else None if name == "folds" else value)
        if before != value:
            shown = "another config" if name == "config" else f"{name} {_shown(value)}, not {_shown(before)}"
            differences.append(shown)
    if differences:
        raise UserError(
            f"--resume {options.out}: the plan differs from the run's: {'; '.join(differences)} "
            "(resume with the options the run was started with, or start another run)"
        )


def _ids(ids) -> str:
    return ",".join(map(str, sorted(ids)))


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _manifest(options: RunOptions, out: Path, previous: dict | None, datasets: dict, executor) -> dict:
    """This invocation's manifest: the run's identity (its run_id, first start, earlier invocations)
    kept from ``previous`` when resuming, the rest as this invocation runs it."""
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "run_id": out.name,
        "status": RUNNING,
        "command": options.command,
        "suite": options.suite,
        "fallback": options.fallback,
        "config": options.spec.to_dict(),
        "datasets": list(datasets.values()),
        "seeds": options.seeds,
        "folds": options.folds,
        "frameworks": options.frameworks,
        "reference_roles": list(REFERENCES),
        "threads": executor.threads,
        "device": options.device,
        "job_timeout_s": options.job_timeout,
        "timing_budget_s": options.timing_budget,
        "deploy": options.deploy,
        "save_models": options.save_models,
        "save_predictions": options.save_predictions,
        "worker": executor.description,
        "concurrency": executor.concurrency,
        "executor": executor.info(),
        "environment": environment(),
        "worker_env": {k: v for k, v in worker_env(executor.threads).items() if k.startswith("OMP_")},
        "started": time.time(),
        "finished": None,
        "invocations": [],
    }
    if options.spec.sweep:  # the configurations each job runs, in the sweep's order
        manifest["sweep_keys"] = list(
            options.spec.sweep
        )  # in the file's order (the manifest is written with sorted keys)
        manifest["variants"] = [{"label": v.label, "params": v.params} for v in options.spec.variants()]
    if previous is not None:
        invocations = previous.get("invocations") or [_first_invocation(previous)]
        for invocation in invocations:  # one that never said how it ended was killed (no process holds the folder)
            if invocation.get("status") == RUNNING:
                invocation.update(status=INTERRUPTED, reason="ended without updating the manifest (killed?)")
        manifest.update(
            run_id=previous["run_id"], started=previous.get("started") or manifest["started"], invocations=invocations
        )
    return manifest


def _first_invocation(manifest: dict) -> dict:
    """The invocation that wrote a manifest of schema < 4 (which kept no list of them)."""
    jobs = manifest.get("jobs") or {}
    return {
        "invocation": 1,
        "command": manifest.get("command"),
        "started": manifest.get("started"),
        "finished": manifest.get("finished"),
        "status": manifest.get("status"),
        "reason": None,
        "environment": manifest.get("environment"),
        "jobs": {k: jobs.get(k) for k in ("skipped_as_done", "ok", "failed")},
    }


def _account(manifest: dict, written: list[dict]) -> dict:
    """The manifest with the account of the jobs from the records written so far: the counts, each
    unfinished job with why, and per invocation the jobs it ran ok and failed (one it left
    incomplete counts as failed). The run's status is its last invocation's."""
    last = manifest["invocations"][-1]
    manifest.update(status=last["status"], finished=last["finished"])
    _, jobs = account(manifest, written)
    for invocation in manifest["invocations"]:
        ran = [r for r in written if r.get("invocation") == invocation["invocation"]]
        if ran or invocation is last:  # (a run of schema < 4 wrote no invocation: its counts stand)
            _, its = account(manifest, ran)
            invocation["jobs"].update(ok=len(its.ok), failed=len({job_key(r) for r in ran}) - len(its.ok))
    manifest.update(
        jobs=jobs.counts(),
        unfinished=[
            {"dataset_id": d, "seed": s, **({} if k is None else {"fold": k}), "framework": f, "why": why}
            for (d, s, k, f), why in sorted(jobs.unfinished.items())
        ],
    )
    return manifest


def _measure_overhead(manifest: dict, invocation: dict, appended: list[dict], wall: float, out: Path) -> None:
    """How the machine was shared in this invocation, and its harness overhead: the share of its job
    slots' time (wall time x jobs at once) spent outside measured training and inference (worker
    start-up, data loading, bookkeeping, jobs held while another is timed)."""
    measured = sum(r.get(k) or 0.0 for r in appended if not r.get("reused") for k in MEASURED_KEYS)
    slots = wall * manifest["concurrency"]
    numbers = {
        "wall_seconds": wall,
        "measured_seconds": measured,
        "harness_overhead": None if slots <= 0 else max(0.0, 1.0 - measured / slots),
        "sharing": _sharing(manifest, out, invocation["started"], appended),
    }
    invocation.update(numbers)
    manifest.update(numbers)


def _sharing(manifest: dict, out: Path, started: float, records: list[dict]) -> dict:
    """How the machine was shared in this invocation (from ``started``): jobs at once and threads
    each, and the quiet rule's log (``quiet.py``): seconds timed alone, seconds jobs stood still for another's timing,
    and the number of timings that overlapped other work of the run (0 unless the rule broke).
    Hosts whose workers could not write the run folder (Dask elsewhere) kept their log locally."""
    intervals = [i for i in read_intervals(out / QUIET) if i["start"] >= started]
    return {
        "jobs_at_once": manifest["concurrency"],
        "threads_per_job": manifest["threads"],
        "timing": "alone: while a model is timed, every other job of the run on that machine stands still at "
        "its next epoch (running/quiet.py)",
        "timed_seconds": sum(i["end"] - i["start"] for i in intervals if i["kind"] == "timing"),
        "held_seconds": sum(r.get("held_seconds") or 0.0 for r in records),
        "timing_overlaps": len(overlaps(intervals)),
        "hosts_logged": sorted({p.name for p in (out / QUIET).iterdir()}) if (out / QUIET).is_dir() else [],
    }
