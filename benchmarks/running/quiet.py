"""Quiet while timing: the jobs of a run may train at once, but every latency and throughput
measurement runs with nothing else of the run's jobs running on that machine, so that its timings
compare with those of a serial run.

Two lock files in a folder per machine (``fcntl.flock``: a worker that dies releases its locks):

- ``busy``: a job holds it *shared* while it works (loads data, trains, converts) and *exclusively*
  while it times a model;
- ``gate``: a job that wants to time takes it first and holds it until it is done; the others pass
  through it at their next checkpoint, so a waiting timer is never starved by jobs that keep
  working.

A job passes a checkpoint between epochs: when the gate is free (nobody times or waits to), that
costs one non-blocking ``flock``; when it is taken, the job lets go of ``busy`` and waits at the
gate. A timer thus waits at most for the others' current epoch (or their current conversion or data
preparation, which have no checkpoint), and while it times every other job stands still. A job
waiting at the gate holds nothing, so two timers cannot deadlock.

Each process appends its intervals (``busy``, between its waits; ``timing``) to ``intervals.jsonl``
in the folder (one short line per ``write`` on a file opened for appending: lines never interleave),
from which the run's manifest says how the machine was shared and the tests check that no two
intervals of another kind overlap.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

QUIET = "quiet"  # the run folder's subfolder of lock folders, one per host
INTERVALS = "intervals.jsonl"


class Quiet:
    """One job's side of the rule. ``Quiet(None)``: a job alone on its machine (nothing to wait for)."""

    def __init__(self, folder: str | Path | None, job: str = ""):
        self.folder, self.job = (Path(folder) if folder else None), job
        self.held = 0.0  # seconds this job stood still waiting for another's timing (or its own turn to time)
        self._busy_since: float | None = None

    def __enter__(self) -> Quiet:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT
            self._gate, self._busy = os.open(self.folder / "gate", flags), os.open(self.folder / "busy", flags)
            self._log = os.open(self.folder / INTERVALS, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            self._enter_busy()
        return self

    def __exit__(self, *exc) -> None:
        if self.folder is not None:
            self._leave_busy()
            for fd in (self._gate, self._busy, self._log):
                os.close(fd)

    def checkpoint(self) -> None:
        """Between two pieces of work (epochs): wait here while another job times."""
        if self.folder is None:
            return
        try:
            fcntl.flock(self._gate, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a timer holds the gate: step aside until it is done
            self._leave_busy()
            self._enter_busy()
        else:
            fcntl.flock(self._gate, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """A measurement that must run alone: waits until every other job stands still."""
        if self.folder is None:
            yield
            return
        self._leave_busy()  # a job waiting at the gate holds nothing: no deadlock between two timers
        waiting = time.perf_counter()
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        fcntl.flock(self._busy, fcntl.LOCK_EX)  # once every other job has reached a checkpoint
        self.held += time.perf_counter() - waiting
        start = time.time()
        try:
            yield
        finally:
            self._record("timing", start, time.time())
            fcntl.flock(self._busy, fcntl.LOCK_SH)
            self._busy_since = time.time()
            fcntl.flock(self._gate, fcntl.LOCK_UN)

    def _enter_busy(self) -> None:
        waiting = time.perf_counter()
        fcntl.flock(self._gate, fcntl.LOCK_EX)  # behind any timer that is waiting or timing
        fcntl.flock(self._busy, fcntl.LOCK_SH)
        fcntl.flock(self._gate, fcntl.LOCK_UN)
        self.held += time.perf_counter() - waiting
        self._busy_since = time.time()

    def _leave_busy(self) -> None:
        assert self._busy_since is not None  # set by _enter_busy
        self._record("busy", self._busy_since, time.time())
        fcntl.flock(self._busy, fcntl.LOCK_UN)

    def _record(self, kind: str, start: float, end: float) -> None:
        line = json.dumps({"pid": os.getpid(), "job": self.job, "kind": kind, "start": start, "end": end})
        os.write(self._log, (line + "\n").encode())


def read_intervals(folder: Path) -> list[dict]:
    """Every interval logged under ``folder`` (the per-machine folders of a run)."""
    return [
        json.loads(line)
        for path in sorted(Path(folder).rglob(INTERVALS))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def overlaps(intervals: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs of intervals of two different processes, at least one of them timing, that overlap."""
    timings = [i for i in intervals if i["kind"] == "timing"]
    return [
        (t, other)
        for t in timings
        for other in intervals
        if other is not t and other["pid"] != t["pid"] and other["start"] < t["end"] and t["start"] < other["end"]
    ]
