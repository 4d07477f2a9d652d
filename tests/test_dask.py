"""Distributed execution (`distillbench run --executor local|dask --workers N --scheduler ADDRESS`),
on a real `distributed.LocalCluster` with worker processes, not a mock.

The smoke suite (1 classification + 1 regression dataset, both frameworks, one seed, a tiny config)
runs once with the default local executor; its quality metrics are the reference that a run on a
LocalCluster started for the run, one on a cluster whose worker is killed mid-job, and `local
--workers 2` must reproduce exactly. Every job runs with one thread, so the runs differ only in
where the jobs ran. About 2 minutes on a 2-core machine; skipped without ../shared/openml-cache.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from types import SimpleNamespace

import pytest

from distillbench.benchmarks.running.quiet import QUIET, overlaps, read_intervals
from distillbench.benchmarks.store.run_folder import read_records
from distillbench.implementations.roles import REFERENCE, REFERENCES, ROLES
from test_harness import FRAMEWORKS, SMOKE, SMOKE_RUN, assert_ok, clean_env, distillbench_run, keys, run_args, tiny_data

pytestmark = pytest.mark.slow
EXPECTED = sorted(
    [(d, 0, f, role) for d in SMOKE for f in FRAMEWORKS for role in ROLES]
    + [(d, 0, REFERENCE, role) for d in SMOKE for role in REFERENCES]
)


@pytest.fixture(scope="module")
def data(openml_source, openml_cache, tmp_path_factory) -> SimpleNamespace:
    return tiny_data(openml_source, openml_cache, tmp_path_factory.mktemp("config"))


def smoke(data, cwd, *args: str) -> SimpleNamespace:
    out = cwd / "run"
    result = distillbench_run(data, *SMOKE_RUN, "--out", str(out), *args, cwd=cwd)
    assert_ok(result)
    return SimpleNamespace(
        out=out, result=result, records=read_records(out), manifest=json.loads((out / "manifest.json").read_text())
    )


def quality(records: list[dict]) -> dict[tuple, dict]:
    return {(r["dataset_id"], r["seed"], r["framework"], r["role"]): r["metrics"] for r in records}


def assert_each_job_once_and_ok(run) -> None:
    assert sorted(keys(run.records)) == EXPECTED  # nothing lost, nothing written twice
    assert all(r["status"] == "ok" for r in run.records), [r["error"] for r in run.records]
    assert run.manifest["status"] == "complete" and run.manifest["jobs"]["ok"] == len(SMOKE) * (len(FRAMEWORKS) + 1)


@pytest.fixture(scope="module")
def local_run(data, tmp_path_factory) -> SimpleNamespace:
    return smoke(data, tmp_path_factory.mktemp("local"), "--threads", "1")


def test_importing_distillbench_does_not_import_dask() -> None:
    code = (
        "import sys, distillbench.cli, distillbench.benchmarks.running.commands, "
        "distillbench.benchmarks.running.runner, distillbench.benchmarks.running.executors; "
        "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_a_local_cluster_started_for_the_run_gives_the_local_quality(local_run, data, tmp_path) -> None:
    run = smoke(data, tmp_path, "--executor", "dask", "--workers", "2", "--threads", "2")
    assert_each_job_once_and_ok(run)
    assert quality(run.records) == quality(local_run.records)  # the same seeds: bit for bit the same metrics
    executor = run.manifest["executor"]
    assert executor["name"] == "dask" and executor["local_cluster"] and executor["workers"] == 2
    assert run.manifest["concurrency"] == 2 and run.manifest["threads"] == 1  # 2 threads shared by 2 jobs at once
    assert {r["threads"] for r in run.records} == {1}
    for r in run.records:  # every record says where it ran
        assert r["host"] and r["machine"] == local_run.records[0]["machine"]
    # The Dask workers of one machine keep the quiet-while-timing rule among themselves.
    assert run.manifest["sharing"]["timing_overlaps"] == 0 and run.manifest["sharing"]["hosts_logged"]
    assert "dask" not in json.dumps(local_run.manifest["executor"]) and local_run.manifest["concurrency"] == 1


def test_local_workers_run_jobs_at_once_and_say_so(local_run, data, tmp_path) -> None:
    run = smoke(data, tmp_path, "--workers", "2", "--threads", "2")  # 4 jobs, 2 at a time
    assert_each_job_once_and_ok(run)
    assert quality(run.records) == quality(local_run.records)  # trained side by side: bit for bit the serial numbers
    assert run.manifest["concurrency"] == 2 and run.manifest["threads"] == 1
    assert run.manifest["executor"] == {"name": "local", "concurrency": 2}
    assert "2 jobs at once" in run.manifest["worker"] and run.manifest["worker_env"]["OMP_NUM_THREADS"] == "1"
    # Quiet while timing, from the run's own log: every model was timed (latency and throughput)
    # while no other job of the run did anything, and the jobs did run side by side.
    intervals = read_intervals(run.out / QUIET)
    timings = [i for i in intervals if i["kind"] == "timing"]
    assert len(timings) == len(run.records) and len({i["pid"] for i in timings}) > 1
    assert overlaps(intervals) == []
    jobs = sorted({(r["started"], r["finished"]) for r in run.records})
    assert any(a_end > b_start for (_, a_end), (b_start, _) in itertools.pairwise(jobs))  # some jobs overlapped
    sharing = run.manifest["sharing"]
    assert sharing["jobs_at_once"] == 2 and sharing["threads_per_job"] == 1 and sharing["timing_overlaps"] == 0
    assert sharing["timed_seconds"] == pytest.approx(sum(i["end"] - i["start"] for i in timings))
    assert all(r["held_seconds"] >= 0 for r in run.records)
    # Two runs whose jobs were timed under different concurrency: their timings are not comparable.
    from distillbench.benchmarks.tracking.run_differences import machine_differences

    assert any("concurrency" in d for d in machine_differences(local_run.manifest, run.manifest))


@pytest.fixture
def cluster():
    """A LocalCluster of 2 worker processes (one thread each) that the test owns, and a client.
    The nannies run in this process and set environment variables here: restored afterwards."""
    import dask
    from distributed import Client, LocalCluster

    environ = dict(os.environ)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"allowed_failures": 2},
        )
    client = Client(cluster)
    try:
        yield SimpleNamespace(cluster=cluster, client=client, environ=environ)
    finally:
        client.close()
        cluster.close()
        os.environ.clear()
        os.environ.update(environ)


def _executing(dask_worker) -> int:
    return dask_worker.state.executing_count


def _frameworks_imported() -> list[str]:
    return [m for m in ("torch", "tensorflow") if m in sys.modules]


def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(local_run, data, cluster, tmp_path) -> None:
    client = cluster.client
    out = tmp_path / "run"
    command = run_args(
        data, *SMOKE_RUN, "--out", str(out), "--executor", "dask", "--scheduler", cluster.cluster.scheduler_address
    )
    env = {k: v for k, v in cluster.environ.items() if k in clean_env()}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            busy = [address for address, n in client.run(_executing).items() if n]
            if busy:  # a job is running there: kill its Dask worker process outright
                killed = client.run(os.getpid, workers=busy[:1])[busy[0]]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.2)
        _stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "no job was seen running"
    started = Counter(t.key for t in cluster.cluster.scheduler.transition_log if t.finish == "processing")
    assert sorted(started.values())[-1] == 2, started  # the killed worker's job ran again, elsewhere
    assert proc.returncode == 0, stderr[-3000:]
    run = SimpleNamespace(records=read_records(out), manifest=json.loads((out / "manifest.json").read_text()))
    assert_each_job_once_and_ok(run)  # the lost job was run again elsewhere, and written once
    assert quality(run.records) == quality(local_run.records)
    assert run.manifest["executor"]["scheduler"] == cluster.cluster.scheduler_address
    assert killed not in client.run(os.getpid).values()  # that worker is gone (its nanny started a new one)
    # The Dask worker processes hand jobs to one process per framework: they never import either framework.
    assert all(imported == [] for imported in client.run(_frameworks_imported).values())


def test_scheduler_needs_the_dask_executor(data, tmp_path) -> None:
    result = distillbench_run(
        data, "--suite", "smoke", "--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path / "r"), cwd=tmp_path
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("--scheduler needs --executor dask")


def test_timings_are_put_side_by_side_only_from_one_kind_of_machine(local_run) -> None:
    """A run whose jobs ran on two kinds of machine (as on a mixed Dask cluster): the report says so and
    keeps its timing comparisons within one kind; compare makes timing advisory."""
    from distillbench.benchmarks.reporting.aggregate import machine_kinds
    from distillbench.benchmarks.tracking.run_differences import job_machine_differences

    same = local_run.records
    other = [
        {**r, "machine": {**r["machine"], "cpu": "Another CPU"}} if r["framework"] == "tensorflow" else r for r in same
    ]
    assert machine_kinds(same, local_run.manifest) == (False, None)
    mixed, note = machine_kinds(other, local_run.manifest)
    assert mixed and "2 kinds of machine" in note and "Another CPU" in note
    assert job_machine_differences(same, same) == []
    assert job_machine_differences(same, other) and job_machine_differences(other, other)
