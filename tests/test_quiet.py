"""Quiet while timing (``running/quiet.py``): several processes working with checkpoints, each
timing now and then; no timing may overlap anything another process does."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from distillbench.benchmarks.running.quiet import Quiet, overlaps, read_intervals


def _job(start, folder: str, name: str, epochs: int, epoch_s: float, timings: int) -> None:
    start.wait()  # all at once, however long each process took to start
    with Quiet(folder, name) as quiet:
        for _ in range(timings):
            for _ in range(epochs):
                quiet.checkpoint()
                time.sleep(epoch_s)  # an epoch of training
            with quiet.timing():
                time.sleep(0.05)


def _run(folder, jobs) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(jobs))
    procs = [context.Process(target=_job, args=(start, str(folder), *job)) for job in jobs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    return read_intervals(folder)


@pytest.mark.slow  # starts three processes
def test_no_timing_overlaps_another_jobs_work(tmp_path):
    # Three jobs with different epoch lengths, each timing three times while the others train.
    intervals = _run(tmp_path, [("a", 10, 0.01, 3), ("b", 7, 0.02, 3), ("c", 25, 0.004, 3)])
    timings = [i for i in intervals if i["kind"] == "timing"]
    assert sorted(i["job"] for i in timings) == sorted(["a", "b", "c"] * 3)
    assert all(i["end"] - i["start"] >= 0.05 for i in timings)
    assert overlaps(intervals) == []
    # The others stepped aside at their checkpoints: a job's work is cut not only by its own three
    # timings (4 busy intervals) but also where it waited for another's.
    for job in "abc":
        assert sum(i["job"] == job and i["kind"] == "busy" for i in intervals) > 4


def test_overlaps_finds_a_timing_that_ran_beside_other_work():
    timing = {"pid": 1, "job": "a", "kind": "timing", "start": 10.0, "end": 11.0}
    beside = {"pid": 2, "job": "b", "kind": "busy", "start": 10.9, "end": 12.0}
    after = {"pid": 2, "job": "b", "kind": "busy", "start": 11.0, "end": 12.0}
    own = {"pid": 1, "job": "a", "kind": "busy", "start": 9.0, "end": 10.5}
    assert overlaps([timing, beside, after, own]) == [(timing, beside)]


def test_alone_nothing_is_locked_or_logged(tmp_path):
    with Quiet(None) as quiet:
        quiet.checkpoint()
        with quiet.timing():
            pass
    assert list(tmp_path.iterdir()) == []
