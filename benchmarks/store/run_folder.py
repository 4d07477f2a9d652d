"""A run folder: ``records.jsonl`` (one JSON object per line, appended as each job ends) and
``manifest.json``, guarded by a lock so that only one run writes to a folder at a time.

Every command reads a run folder through ``read_run``, which checks what it reads (the records'
schema is ``record.py``) and gives an account of the planned jobs. What survives what:

- A job's records are one write followed by fsync; a write that fails (disk full, a folder no longer
  writable) is cut back off, so a job's records are there whole or not at all. Each record says how
  many its job wrote (``job_records``): a job with fewer (a kill mid-write) is *incomplete*, and
  none of its records count as ok.
- A run killed mid-write leaves at most a partial last line: readers ignore it, ``--resume`` cuts it off.
- A damaged line (not JSON, not a record) is named with its line number: ``read_run`` refuses the
  folder in one line, or with ``skip_damaged`` warns and skips it; ``--resume`` moves such lines
  into ``records.rejected.jsonl`` and runs their jobs again.
- A manifest that says ``running`` while no process holds the folder's lock is read as
  ``interrupted`` (the run was killed, or its folder stopped taking writes).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from distillbench.benchmarks.store.record import (
    FAILED,
    SCHEMA_VERSION,
    is_deployment,
    is_ok,
    job_key,
    record_key,
    record_problem,
)
from distillbench.errors import UserError
from distillbench.files import write_atomic
from distillbench.implementations.roles import REFERENCE, REFERENCES, ROLES

log = logging.getLogger(__name__)

RECORDS = "records.jsonl"
MANIFEST = "manifest.json"
LOCK = ".lock"
REJECTED = "records.rejected.jsonl"  # damaged lines that --resume moved out of records.jsonl
RESERVE = ".reserve"  # room kept on the disk for the manifest (RunFolder)
RESERVE_BYTES = 64 * 1024
RUNNING, COMPLETE, INTERRUPTED, STOPPED = "running", "complete", "interrupted", "failed"  # a run's status


def _clean(value):
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _loads(text: str):
    """JSON, with NaN and infinity (which the writer writes as null) read as null."""
    return json.loads(text, parse_constant=lambda name: None)


def check_schema(data: dict, path: Path) -> None:
    """A record or manifest this code can read: any schema version up to ``SCHEMA_VERSION`` (one
    without ``schema_version`` is version 1); a newer or unknown one is a one-line UserError."""
    version = data.get("schema_version", 1)
    if not (type(version) is int and 1 <= version <= SCHEMA_VERSION):
        raise UserError(
            f"{path}: written with schema version {version!r}, but this distillbench reads versions 1 to "
            f"{SCHEMA_VERSION} (a newer distillbench wrote it: read it with that one)"
        )


@dataclass(frozen=True)
class Damaged:
    """A line of records.jsonl that is not a record: its number (from 1), its bytes and why."""

    line: int
    data: bytes
    why: str


def read_lines(run_dir: Path, skip_damaged: bool = False) -> tuple[list[dict], list[Damaged]]:
    """The records of records.jsonl in file order, and its damaged lines. A partial last line (a run
    killed mid-write) is ignored. A damaged line is a one-line UserError naming it, unless
    ``skip_damaged``: then it is skipped with a warning on stderr and returned."""
    path = Path(run_dir) / RECORDS
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    records, damaged = [], []
    for number, line in enumerate(data.split(b"\n")[:-1], 1):  # the last part: b"" or a partial line
        if not line.strip():
            continue
        try:
            record = _loads(line.decode("utf-8"))
            why = record_problem(record)
        except UnicodeDecodeError as exc:
            why = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        except ValueError as exc:
            why = f"not valid JSON ({exc})"
        if why is None:
            check_schema(record, path)
            records.append(record)
            continue
        if not skip_damaged:
            raise UserError(
                f"{path} line {number}: {why}; the file is damaged (`distillbench run --resume` "
                f"sets such lines aside and runs their jobs again)"
            )
        log.warning(f"distillbench: warning: {path} line {number}: {why}; skipped")
        damaged.append(Damaged(number, line, why))
    return records, damaged


def read_records(run_dir: Path) -> list[dict]:
    """All the records of a run in file order (a damaged line is a UserError)."""
    return read_lines(run_dir)[0]


def latest_records(records: list[dict]) -> list[dict]:
    """One record per ``record_key`` (dataset, seed, framework, configuration of a sweep, role): the
    last written (a resumed run re-runs failed jobs and appends their new records)."""
    return list({record_key(record): record for record in records}.values())


def manifest_problem(manifest: object) -> str | None:
    """Why a value read from manifest.json is not a run's manifest, or None."""
    if not isinstance(manifest, dict):
        return f"not a JSON object but {type(manifest).__name__}"
    expected = {
        "run_id": (str, "a string"),
        "status": (str, "a string"),
        "config": (dict, "an object"),
        "seeds": (list, "a list of integers"),
        "frameworks": (list, "a list of names"),
        "datasets": (list, "a list of objects with an integer id"),
    }
    missing = [name for name in expected if name not in manifest]
    if missing:
        return f"no {', '.join(missing)}"
    for name, (kind, what) in expected.items():
        if not isinstance(manifest[name], kind):
            return f"{name}: {json.dumps(manifest[name])[:40]} is not {what}"
    items = {
        "seeds": lambda s: type(s) is int,
        "frameworks": lambda f: isinstance(f, str),
        "datasets": lambda d: isinstance(d, dict) and type(d.get("id")) is int,
    }
    for name, good in items.items():
        if not all(good(item) for item in manifest[name]):
            return f"{name}: not {expected[name][1]}"
    folds = manifest.get("folds")
    if folds is not None and not (type(folds) is int and folds >= 2):
        return f"folds: {json.dumps(folds)[:40]} is not null or an integer of at least 2"
    for name in ("jobs", "environment"):
        if not isinstance(manifest.get(name, {}), dict):
            return f"{name}: not an object"
    if not isinstance(manifest.get("invocations", []), list):
        return "invocations: not a list"
    return None


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / MANIFEST
    try:
        manifest = _loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UserError(f"{run_dir}: not a run folder (no {MANIFEST})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    why = manifest_problem(manifest)
    if why:
        raise UserError(f"{path}: not a run manifest ({why})")
    check_schema(manifest, path)
    return manifest


def held(run_dir: Path) -> bool:
    """Whether a process holds the run folder's lock: a run is writing to it now."""
    try:
        with open(Path(run_dir) / LOCK, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no lock file: no run ever held it, or it was copied without it
        return False
    return False


@dataclass(frozen=True)
class Jobs:
    """The account of a run's planned jobs, (dataset, seed, framework) each: ok (every record it
    should have written is there, every model's ok), failed (all there, a model failed), and
    unfinished, with why (incomplete: records missing; not run)."""

    planned: list[tuple]
    ok: set = field(default_factory=set)
    failed: set = field(default_factory=set)
    unfinished: dict = field(default_factory=dict)

    def counts(self) -> dict:
        return {
            "planned": len(self.planned),
            "ok": len(self.ok),
            "failed": len(self.failed),
            "missing": len(self.unfinished),
        }


@dataclass(frozen=True)
class Run:
    path: Path
    manifest: dict  # its "status" as read: "interrupted" for a "running" one that no process holds
    records: list[dict]  # the latest record per record_key; an incomplete job's as failed
    jobs: Jobs
    damaged: list[Damaged] = field(default_factory=list)  # lines skipped (read_run's skip_damaged)


def read_run(run_dir: Path, skip_damaged: bool = False) -> Run:
    """A run folder as every command reads it: its manifest, its latest records (written with any
    schema version up to ``SCHEMA_VERSION``) and the account of its jobs. A damaged records line
    is a UserError naming it, or with ``skip_damaged`` a warning (its job is then incomplete)."""
    manifest = read_manifest(run_dir)
    written, damaged = read_lines(run_dir, skip_damaged)
    if manifest["status"] == RUNNING and not held(run_dir):
        manifest = manifest | {"status": INTERRUPTED, "status_written": RUNNING}
    records, jobs = account(manifest, written)
    manifest["jobs"] = {**manifest.get("jobs", {}), **jobs.counts()}
    return Run(Path(run_dir), manifest, records, jobs, damaged)


def planned_folds(manifest: dict) -> list[int | None]:
    """The folds of each seed a run plans: 0..K-1 with ``folds`` K, else [None] (the holdout split)."""
    folds = manifest.get("folds")
    return [None] if folds is None else list(range(folds))


def planned_splits(manifest: dict, dataset: dict) -> list[tuple[int, int | None, int | None]]:
    """(seed, fold, folds) of each split a run plans for a dataset (an entry of the manifest's
    ``datasets``): an OpenML task's repeats x folds (its ``task``), else the run's seeds x folds."""
    task = dataset.get("openml_task")
    if task:
        return [(r, k, task["folds"]) for r in range(task["repeats"]) for k in range(task["folds"])]
    return [(seed, fold, manifest.get("folds")) for seed in manifest["seeds"] for fold in planned_folds(manifest)]


def planned_jobs(manifest: dict) -> list[tuple]:
    """The (dataset, seed, fold, framework) jobs a run plans (``record.job_key``): with the reference
    job of each (dataset, seed, fold) where the manifest names reference roles (schema >= 3)."""
    frameworks = ([REFERENCE] if manifest.get("reference_roles") else []) + list(manifest["frameworks"])
    return [
        (d["id"], seed, fold, framework)
        for d in manifest["datasets"]
        for seed, fold, _ in planned_splits(manifest, d)
        for framework in frameworks
    ]


def account(manifest: dict, written: list[dict]) -> tuple[list[dict], Jobs]:
    """The latest records and the account of the jobs. A job's latest records are those of the last
    invocation that wrote it; it is complete when they number its ``job_records`` (records of
    schema < 4: when every model role of every configuration is there)."""
    by_job = defaultdict(list)
    for record in written:
        by_job[job_key(record)].append(record)
    configurations = [v.get("label") for v in manifest.get("variants") or [{"label": None}]]
    jobs, records = Jobs(planned_jobs(manifest)), []
    for key, job in by_job.items():
        last = max(r.get("invocation", 0) for r in job)
        latest = latest_records([r for r in job if r.get("invocation", 0) == last])
        expected = max((r.get("job_records") or 0) for r in latest)
        roles = {(r.get("variant"), r["role"]) for r in latest}
        # a reference job fits its roles once, for the base configuration
        wanted = (
            [(None, role) for role in REFERENCES]
            if key[-1] == REFERENCE
            else [(variant, role) for variant in configurations for role in ROLES]
        )
        lacking = [
            f"{role}" + (f" ({variant})" if variant else "") for variant, role in wanted if (variant, role) not in roles
        ]
        if len(latest) < expected or (not expected and lacking):
            why = (
                f"incomplete: {len(latest)} of its {expected or len(wanted)} records were "
                f"written"
                + (f" (none for {', '.join(lacking)})" if lacking else "")
                + "; `distillbench run --resume` runs it again"
            )
            jobs.unfinished[key] = why
            latest = [r | {"status": FAILED, "error": why} for r in latest]
        elif all(is_ok(r) or is_deployment(r) for r in latest):
            jobs.ok.add(key)
        else:
            jobs.failed.add(key)
        records += latest
    for key in jobs.planned:
        if key not in by_job:
            jobs.unfinished[key] = f"not run (run status: {manifest['status']})"
    return records, jobs


def newest_run(results: Path = Path("results")) -> Path:
    """The run folder under ``results`` whose manifest was written last."""
    runs = sorted((p for p in results.glob("*/manifest.json")), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"no run folder under {results}/: run `distillbench run` first, or name RUN_DIR")
    return runs[-1].parent


class RunFolder:
    """Exclusive writer of one run folder (the lock is released when the process ends, however).
    Its writes raise OSError as they come (the runner turns that into a RunFault); while open, it
    keeps 64 KiB in reserve (``.reserve``) so that the manifest can still be written on a full disk."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir)
        self._lock = open(self.path / LOCK, "w")  # noqa: SIM115 - held open (locked) until close()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise UserError(f"{self.path}: another run is writing to this folder") from None
        self._records: int | None = None  # a file descriptor, unbuffered: what a write wrote is known
        with contextlib.suppress(OSError):  # without it, a manifest on a full disk may stay as it was
            if not (self.path / RESERVE).is_file():
                with open(self.path / RESERVE, "wb") as fh:
                    os.posix_fallocate(fh.fileno(), 0, RESERVE_BYTES)

    def truncate_partial_line(self) -> None:
        path = self.path / RECORDS
        if path.is_file():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                path.write_bytes(data[: data.rfind(b"\n") + 1])

    def set_aside(self, damaged: list[Damaged]) -> Path:
        """Move damaged lines out of records.jsonl into records.rejected.jsonl (appended: nothing is
        deleted); records.jsonl is rewritten without them, atomically."""
        numbers = {d.line for d in damaged}
        with open(self.path / REJECTED, "ab") as rejected:
            rejected.write(b"".join(d.data + b"\n" for d in damaged))
            rejected.flush()
            os.fsync(rejected.fileno())
        lines = (self.path / RECORDS).read_bytes().split(b"\n")[:-1]
        write_atomic(self.path / RECORDS, b"".join(line + b"\n" for n, line in enumerate(lines, 1) if n not in numbers))
        return self.path / REJECTED

    def append(self, records: list[dict]) -> None:
        """Append a job's records in one write, then fsync; if that fails, the file is cut back to
        where it was (the records are there whole or not at all) and the OSError raised."""
        if self._records is None:
            self._records = os.open(self.path / RECORDS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        data = memoryview("".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in records).encode())
        end = os.lseek(self._records, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(self._records, data) :]
            os.fsync(self._records)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._records, end)
            raise

    def write_manifest(self, manifest: dict) -> None:
        """Replace the manifest atomically: a reader sees the old one or the new one, never half.
        On a full disk, the reserve is given up for it; in a folder that takes no new file any more
        (its permissions changed), the file is rewritten in place. OSError if all of that fails."""
        data = (json.dumps(_clean(manifest), indent=1, sort_keys=True) + "\n").encode()
        try:
            write_atomic(self.path / MANIFEST, data)
            return
        except OSError as exc:
            error = exc
        with contextlib.suppress(OSError):
            (self.path / RESERVE).unlink()
            write_atomic(self.path / MANIFEST, data)
            return
        try:
            with open(self.path / MANIFEST, "r+b") as fh:
                fh.write(data)
                fh.truncate()
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            raise error from None

    def close(self) -> None:
        if self._records is not None:
            os.close(self._records)
        with contextlib.suppress(OSError):  # the run has written its last: no room to keep
            (self.path / RESERVE).unlink()
        self._lock.close()
