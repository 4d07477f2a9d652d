"""The driver of `distillbench run`: plans the (dataset, seed, framework) jobs, prepares the data,
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
from distillbench.benchmarks.running.quiet import QUIET, overlaps, read_intervals
from distillbench.benchmarks.store.record import FAILED, OK, SCHEMA_VERSION, is_deployment, is_ok, job_key
from distillbench.benchmarks.store.run_folder import MANIFEST, RECORDS, RunFolder, latest_records, read_manifest, read_records
from distillbench.datasets.suites import SuiteEntry
from distillbench.env import environment
from distillbench.errors import UserError
from distillbench.implementations.roles import REFERENCE, REFERENCES, ROLES
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
    resume: bool = False
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    device: str = "cpu"
    cache: str | None = None
    source: str | None = None
    job_timeout: float = 3600.0
    fresh_process: bool = False
    timing_budget: float = 2.0
    deploy: bool = True  # also measure every model in its deployment formats (ONNX, int8)
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
        if (out / RECORDS).exists() and not resume:
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
        self._line(f"ETA {eta}", f"done: {name} (dataset {job.dataset_id}) seed {job.seed} {job.framework} {status}")
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
    """Load and prepare every (dataset, seed) once in the driver, which fills the on-disk cache the
    workers read. Returns per dataset: name, task, checksum, or the error that fails its jobs."""
    from distillbench.datasets.prepare import get_prepared
    from distillbench.datasets.sources import OpenMLCache

    cache = OpenMLCache.resolve(options.cache, options.source)
    info = {}
    for entry in options.entries:
        log.info(f"preparing dataset {entry.dataset_id} ({len(options.seeds)} splits)")
        try:
            for seed in options.seeds:
                prepared = get_prepared(entry.dataset_id, seed, target=entry.target, cache=cache)
            info[entry.dataset_id] = {"id": entry.dataset_id, "name": prepared.name, "task": prepared.task,
                                      "target": prepared.target, "checksum": prepared.checksum, "note": entry.note,
                                      "rows": {"train": len(prepared.y_train), "val": len(prepared.y_val), "test": len(prepared.y_test)},
                                      "features": prepared.x_train.shape[1], "notes": prepared.notes}
            log.debug(f"  dataset {entry.dataset_id}: {prepared.name}, {prepared.task}, target {prepared.target}, "
                      f"rows {info[entry.dataset_id]['rows']}, {prepared.x_train.shape[1]} features")
        except UserError as exc:
            info[entry.dataset_id] = {"id": entry.dataset_id, "error": str(exc), "note": entry.note}
            log.warning(f"  dataset {entry.dataset_id} fails its jobs: {exc}")
    if all("error" in d for d in info.values()):
        raise UserError(next(iter(info.values()))["error"] if len(info) == 1 else
                        f"none of the {len(info)} datasets could be loaded (first: {next(iter(info.values()))['error']})")
    return info


def run(options: RunOptions) -> Path:
    """Run the benchmark; returns the run folder. Bad input raises UserError before anything is written."""
    out = options.out
    ids = [entry.dataset_id for entry in options.entries]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:  # jobs, records and --resume are keyed by dataset ID: one entry per dataset in a run
        raise UserError(f"dataset {', '.join(map(str, twice))} listed more than once (e.g. with two targets): "
                        "a run holds each dataset once; run the other target in another run")
    check_writable(out, options.resume)
    if options.resume and (out / MANIFEST).exists():
        previous = read_manifest(out)
        if previous.get("config") != options.spec.to_dict():
            raise UserError(f"--resume {out}: the config differs from the one this run was started with")
    datasets = prepare_datasets(options)

    out.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(out)
    try:
        executor = make_executor(options, out / "worker.log")
    except BaseException:
        folder.close()
        raise
    folder.truncate_partial_line()
    latest = latest_records(read_records(out))
    # A job with a failed record is unfinished (e.g. one configuration of a sweep failed), however many are ok.
    unfinished = {job_key(r) for r in latest if not is_ok(r) and not is_deployment(r)}
    done = {job_key(r) for r in latest if is_ok(r)} - unfinished
    # First each (dataset, seed)'s reference job, then the frameworks' jobs, which get its results.
    jobs = [Job(entry.dataset_id, seed, framework, options.spec.to_dict(), entry.target, executor.threads,
                options.device, options.cache, options.source, options.timing_budget, options.deploy,
                quiet=str((out / QUIET).resolve()))
            for framework in (REFERENCE, *options.frameworks) for entry in options.entries for seed in options.seeds]
    todo = [job for job in jobs if job.key not in done]
    manifest = {
        "schema_version": SCHEMA_VERSION, "run_id": out.name, "status": "running", "command": options.command, "suite": options.suite, "fallback": options.fallback,
        "config": options.spec.to_dict(), "datasets": list(datasets.values()), "seeds": options.seeds,
        "frameworks": options.frameworks, "reference_roles": list(REFERENCES), "threads": executor.threads, "device": options.device,
        "job_timeout_s": options.job_timeout, "timing_budget_s": options.timing_budget,
        "deploy": options.deploy, "worker": executor.description,
        "concurrency": executor.concurrency, "executor": executor.info(), "environment": environment(),
        "worker_env": {k: v for k, v in worker_env(executor.threads).items() if k.startswith("OMP_")}, "started": time.time(), "finished": None,
        "jobs": {"planned": len(jobs), "skipped_as_done": len(jobs) - len(todo)},
    }
    if options.spec.sweep:  # the configurations each job runs, in the sweep's order
        manifest["sweep_keys"] = list(options.spec.sweep)  # in the file's order (the manifest is written with sorted keys)
        manifest["variants"] = [{"label": v.label, "params": v.params} for v in options.spec.variants()]
    folder.write_manifest(manifest)
    log.info(f"run {out.name}: {len(todo)} jobs ({len(jobs) - len(todo)} already done) -> {out}")
    log.debug(f"executor: {executor.description}; threads per job {executor.threads}")

    progress = Progress(len(todo))
    wall = time.perf_counter()
    written = set()

    def execute(jobs: list[Job]) -> None:
        no_data = ((job, failed_records(job, datasets[job.dataset_id]["error"], time.time()))
                   for job in jobs if "error" in datasets[job.dataset_id])
        for job, records in itertools.chain(no_data, executor.run(j for j in jobs if "error" not in datasets[j.dataset_id])):
            if job.key in written:  # a job reported twice (e.g. a worker presumed lost came back): written once
                continue
            written.add(job.key)
            for record in records:
                record["run_id"] = out.name
            folder.append(records)
            progress.finish(job, datasets[job.dataset_id].get("name", "?"), records[0]["status"], records[0]["error"])

    try:
        execute([job for job in todo if job.framework == REFERENCE])
        references = _references(read_records(out))  # this session's and an earlier one's
        execute([replace(job, references=references.get((job.dataset_id, job.seed)))
                 for job in todo if job.framework != REFERENCE])
        manifest["status"] = "complete"
    except KeyboardInterrupt:
        manifest["status"] = "interrupted"
        raise
    finally:
        progress.close()
        executor.close()
        _finish_manifest(manifest, out, time.perf_counter() - wall)
        folder.write_manifest(manifest)
        folder.close()
    return out


def _references(records: list[dict]) -> dict[tuple[int, int], dict[str, float]]:
    """Per (dataset, seed), the primary metric of each reference role that ended ok."""
    out: dict[tuple[int, int], dict[str, float]] = {}
    for r in latest_records(records):
        if r["framework"] == REFERENCE and is_ok(r) and r["role"] in REFERENCES:
            out.setdefault((r["dataset_id"], r["seed"]), {})[r["role"]] = r["metrics"][r["primary_metric"]]
    return out


def _finish_manifest(manifest: dict, out: Path, wall: float) -> None:
    """End time, job counts, how the machine was shared, and the harness overhead: the share of this
    session's job slots' time (wall time x jobs at once) spent outside measured training and
    inference (worker start-up, data loading, bookkeeping, jobs held while another is timed)."""
    records = [r for r in read_records(out) if r.get("run_id") == manifest["run_id"]]
    this_session = [r for r in records if r.get("started", 0) >= manifest["started"]]
    measured = sum(r.get(k) or 0.0 for r in this_session if not r.get("reused") for k in MEASURED_KEYS)
    latest = latest_records(records)
    slots = wall * manifest["concurrency"]
    manifest.update(finished=time.time(), wall_seconds=wall, measured_seconds=measured,
                    harness_overhead=None if slots <= 0 else max(0.0, 1.0 - measured / slots),
                    sharing=_sharing(manifest, out, this_session))
    status = {}  # a job of a sweep failed when any of its configurations did
    for r in latest:
        if r["role"] in (ROLES[0], REFERENCES[0]):  # one model of each job (of each configuration)
            key = job_key(r)
            status[key] = FAILED if FAILED in (status.get(key), r["status"]) else r["status"]
    manifest["jobs"].update(ok=sum(s == OK for s in status.values()), failed=sum(s == FAILED for s in status.values()))


def _sharing(manifest: dict, out: Path, records: list[dict]) -> dict:
    """How the machine was shared in this session: jobs at once and threads each, and the quiet
    rule's log (``quiet.py``): seconds timed alone, seconds jobs stood still for another's timing,
    and the number of timings that overlapped other work of the run (0 unless the rule broke).
    Hosts whose workers could not write the run folder (Dask elsewhere) kept their log locally."""
    intervals = [i for i in read_intervals(out / QUIET) if i["start"] >= manifest["started"]]
    return {
        "jobs_at_once": manifest["concurrency"], "threads_per_job": manifest["threads"],
        "timing": "alone: while a model is timed, every other job of the run on that machine stands still at "
                  "its next epoch (running/quiet.py)",
        "timed_seconds": sum(i["end"] - i["start"] for i in intervals if i["kind"] == "timing"),
        "held_seconds": sum(r.get("held_seconds") or 0.0 for r in records),
        "timing_overlaps": len(overlaps(intervals)),
        "hosts_logged": sorted({p.name for p in (out / QUIET).iterdir()}) if (out / QUIET).is_dir() else [],
    }
