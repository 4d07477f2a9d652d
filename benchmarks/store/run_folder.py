"""A run folder: ``records.jsonl`` (one JSON object per line, appended as each job ends) and
``manifest.json``, guarded by a lock so that only one run writes to a folder at a time.

A killed run never leaves a half-written line that counts: each record is one ``write`` of a whole
line followed by fsync, and a reader ignores (and ``--resume`` cuts off) a trailing partial line.
Every command reads a run folder through ``read_run``; the records' schema is ``record.py``.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from distillbench.benchmarks.store.record import SCHEMA_VERSION, record_key
from distillbench.errors import UserError
from distillbench.files import write_atomic

RECORDS = "records.jsonl"
MANIFEST = "manifest.json"
LOCK = ".lock"


def _clean(value):
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def check_schema(data: dict, path: Path) -> None:
    """A record or manifest this code can read: any schema version up to ``SCHEMA_VERSION`` (one
    without ``schema_version`` is version 1); a newer or unknown one is a one-line UserError."""
    version = data.get("schema_version", 1)
    if not (type(version) is int and 1 <= version <= SCHEMA_VERSION):
        raise UserError(f"{path}: written with schema version {version!r}, but this distillbench reads versions 1 to "
                        f"{SCHEMA_VERSION} (a newer distillbench wrote it: read it with that one)")


def read_records(run_dir: Path) -> list[dict]:
    """All complete records of a run; a line cut short by a kill is ignored."""
    path = Path(run_dir) / RECORDS
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # the partial last line of a killed run
    records = [json.loads(line) for line in lines if line.strip()]
    for record in records:
        check_schema(record, path)
    return records


def latest_records(records: list[dict]) -> list[dict]:
    """One record per ``record_key`` (dataset, seed, framework, configuration of a sweep, role): the
    last written (a resumed run re-runs failed jobs and appends their new records)."""
    return list({record_key(record): record for record in records}.values())


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir}: not a run folder (no {MANIFEST})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    check_schema(manifest, path)
    return manifest


@dataclass(frozen=True)
class Run:
    path: Path
    manifest: dict
    records: list[dict]  # the latest record per record_key


def read_run(run_dir: Path) -> Run:
    """A run folder as every command reads it: its manifest and its latest records, written with any
    schema version up to ``SCHEMA_VERSION``."""
    manifest = read_manifest(run_dir)
    try:
        records = latest_records(read_records(run_dir))
    except (ValueError, KeyError) as exc:
        raise UserError(f"{Path(run_dir) / RECORDS}: not a records file ({type(exc).__name__}: {exc})") from None
    return Run(Path(run_dir), manifest, records)


def newest_run(results: Path = Path("results")) -> Path:
    """The run folder under ``results`` whose manifest was written last."""
    runs = sorted((p for p in results.glob("*/manifest.json")), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UserError(f"no run folder under {results}/: run `distillbench run` first, or name RUN_DIR")
    return runs[-1].parent


class RunFolder:
    """Exclusive writer of one run folder (the lock is released when the process ends, however)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir)
        self._lock = open(self.path / LOCK, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise UserError(f"{self.path}: another run is writing to this folder") from None
        self._records = None

    def truncate_partial_line(self) -> None:
        path = self.path / RECORDS
        if path.is_file():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                path.write_bytes(data[: data.rfind(b"\n") + 1])

    def append(self, records: list[dict]) -> None:
        if self._records is None:
            self._records = open(self.path / RECORDS, "a")
        self._records.write("".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in records))
        self._records.flush()
        os.fsync(self._records.fileno())

    def write_manifest(self, manifest: dict) -> None:
        """Replace the manifest atomically: a reader sees the old one or the new one, never half."""
        write_atomic(self.path / MANIFEST, json.dumps(_clean(manifest), indent=1, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
        self._lock.close()
