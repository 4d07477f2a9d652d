"""The benchmark harness (`distillbench run`), through the real CLI in subprocesses and its Python API.

Runs use a tiny pipeline config (a few epochs, a few units) and a small timing budget so that the
whole file takes a few minutes on a 2-core machine; the data comes from a writable copy of
../shared/openml-cache (the `openml_cache` fixture), and the tests skip when that cache is absent.
Nothing here is mocked: the runs are real runs, killed, resumed and broken for real.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import run_command
from distillbench.benchmarks.running import metrics
from distillbench.benchmarks.store.flags import model_flags
from distillbench.benchmarks.store.metric_registry import HIGHER_IS_BETTER, PRIMARY_METRIC, TEST_METRICS
from distillbench.benchmarks.store.record import REQUIRED_FIELDS, SCHEMA_VERSION
from distillbench.benchmarks.store.run_folder import RECORDS, RunFolder, read_records
from distillbench.datasets.sources import CACHE_ENV, SOURCE_ENV
from distillbench.errors import UserError
from distillbench.implementations.pipeline import STOP_REASONS
from distillbench.implementations.roles import REFERENCE, REFERENCES, ROLES
from distillbench.implementations.spec import TrainingSpec, load_spec

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = """\
name = "tiny"

[teacher]
widths = [16]
dropout = 0.1   # exercises the frameworks' random state across jobs of one worker

[student]
widths = [4]

[training]
epochs = 3
patience = 2
"""
SMOKE = {61: ("iris", "classification", 4, 3), 531: ("boston", "regression", 14, 1)}  # name, task, features, outputs
TASK_METRICS = {
    "classification": {"accuracy", "balanced_accuracy", "log_loss", "roc_auc"},
    "regression": {"rmse", "mae", "r2"},
}
DERIVED = ("retention", "kd_gain", "speedup", "compression")
FRAMEWORKS = ("torch", "tensorflow")
SMOKE_RUN = ("--suite", "smoke", "--frameworks", ",".join(FRAMEWORKS))  # the run options of the smoke suite


# ---- helpers


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (CACHE_ENV, SOURCE_ENV)}


def run_args(data, *args: str, deploy: bool = False) -> list[str]:
    """`distillbench run ARGS` on the test data, with the tiny config (`run_command`: one seed, a short timing
    budget; later options of the same name override these), without the deployment formats unless `deploy`
    (tests/test_deploy.py runs them): one record per role of ROLES."""
    return run_command(data.config, data.cache, *args, source=data.source, deploy=deploy)


def distillbench_run(
    data, *args: str, cwd: Path, timeout: float = 300, deploy: bool = False
) -> subprocess.CompletedProcess:
    return subprocess.run(
        run_args(data, *args, deploy=deploy), cwd=cwd, capture_output=True, text=True, env=clean_env(), timeout=timeout
    )


def start_run(data, *args: str, cwd: Path, stdout=subprocess.PIPE) -> subprocess.Popen:
    """`distillbench run ARGS` (`run_args`) started in `cwd`, its stderr (and by default its stdout) piped, as text."""
    return subprocess.Popen(
        run_args(data, *args), cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, text=True, env=clean_env()
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def keys(records: list[dict]) -> list[tuple]:
    return [(r["dataset_id"], r["seed"], r["framework"], r["role"]) for r in records]


def by_key(records: list[dict]) -> dict[tuple, dict]:
    return dict(zip(keys(records), records))


def models(records: list[dict]) -> list[dict]:
    """The records of the frameworks' models (not the reference roles)."""
    return [r for r in records if r["framework"] != REFERENCE]


def write_suite(path: Path, datasets: str) -> Path:
    path.write_text(f'description = "made by a test"\ndatasets = [{datasets}]\n')
    return path


def tiny_data(openml_source, openml_cache, folder: Path) -> SimpleNamespace:
    """Where the runs read their data (the writable cache, filled from the shared one) and the tiny config,
    written into `folder`: the `data` of `run_args`."""
    (folder / "tiny.toml").write_text(TINY_CONFIG)
    return SimpleNamespace(source=openml_source, cache=openml_cache.root, config=folder / "tiny.toml")


@pytest.fixture(scope="module")
def data(openml_source, openml_cache, tmp_path_factory) -> SimpleNamespace:
    return tiny_data(openml_source, openml_cache, tmp_path_factory.mktemp("config"))


@pytest.fixture(scope="module")
def smoke_run(data, tmp_path_factory) -> SimpleNamespace:
    """One complete run of the smoke suite in both frameworks, one seed, one job at a time, one
    worker per framework (reused: each ran iris, then boston): shared by the schema tests."""
    cwd = tmp_path_factory.mktemp("smoke")
    out = cwd / "run"
    result = distillbench_run(data, *SMOKE_RUN, "--workers", "1", "--out", str(out), cwd=cwd)
    assert_ok(result)
    return SimpleNamespace(
        out=out, result=result, records=read_records(out), manifest=json.loads((out / "manifest.json").read_text())
    )


# ---- the smoke suite end to end, and the record schema


@pytest.mark.slow
def test_smoke_suite_end_to_end_in_both_frameworks(smoke_run) -> None:
    records, manifest = smoke_run.records, smoke_run.manifest
    expected = {(d, 0, f, role) for d in SMOKE for f in ("torch", "tensorflow") for role in ROLES}
    expected |= {(d, 0, REFERENCE, role) for d in SMOKE for role in REFERENCES}  # once per (dataset, seed)
    assert sorted(keys(records)) == sorted(expected)  # every job's records, each exactly once
    assert all(r["status"] == "ok" and r["error"] is None for r in records), [r["error"] for r in records]
    assert {r["run_id"] for r in records} == {smoke_run.out.name} == {manifest["run_id"]}
    assert manifest["status"] == "complete" and manifest["reference_roles"] == list(REFERENCES)
    assert manifest["jobs"] == {"planned": 6, "ok": 6, "failed": 0, "missing": 0}
    assert manifest["invocations"][-1]["jobs"] == {"to_run": 6, "skipped_as_done": 0, "ok": 6, "failed": 0}
    assert manifest["worker"] == "one process per framework, reused"
    # The terminal summary: one row per dataset and framework; progress with an ETA on stderr.
    rows = [line.split() for line in smoke_run.result.stdout.splitlines()]
    for name, task, _, _ in SMOKE.values():
        for framework in ("torch", "tensorflow"):
            assert [name, framework, PRIMARY_METRIC[task]] in [row[:3] for row in rows], smoke_run.result.stdout
    assert "ETA" in smoke_run.result.stderr
    assert (smoke_run.out / "records.jsonl").read_text().endswith("\n")


@pytest.mark.slow
def test_every_model_says_how_its_training_ended_and_what_it_is_flagged_for(smoke_run) -> None:
    records = smoke_run.records
    refs = {(r["dataset_id"], r["seed"], r["role"]): r for r in records if r["framework"] == REFERENCE}
    for r in records:
        assert r["stop_reason"] in STOP_REASONS and 1 <= r["best_step"] <= r["steps"], r
        assert r["best_epoch"] <= r["epochs"]
        if r["framework"] == REFERENCE:
            assert r["framework_version"] == metadata.version("scikit-learn") and "scikit-learn" in r["call_path"]
            assert r["stop_reason"] in ("converged", "early_stopping") and r["flags"] == []
            continue
        # one evaluation in the tiny config's 3 epochs: the plateau schedule never lowered the rate
        assert r["final_learning_rate"] == TrainingSpec().learning_rate
        # 3 epochs of iris (1 step each) or boston (3 steps each): the students end on the budget
        assert r["steps"] == r["epochs"] * {61: 1, 531: 3}[r["dataset_id"]]
        metric = r["primary_metric"]
        reference = {role: refs[(r["dataset_id"], r["seed"], role)]["metrics"][metric] for role in REFERENCES}
        assert r["flags"] == model_flags(r, reference), r
        assert ("budget" in r["flags"]) == (r["stop_reason"] == "max_epochs")
    # the terminal summary: the references beside each framework's models; a warning per flag raised
    stdout = smoke_run.result.stdout
    header = stdout.splitlines()[0].split()
    assert header[3:8] == [*ROLES, *REFERENCES], header
    flagged = [r for r in records if r["flags"]]
    assert flagged and all(f"seed 0 {r['role']}" in stdout for r in flagged[:6])
    assert re.search(r"^warning: \d+ model\(s\) ended on the training budget", stdout, re.M), stdout


@pytest.mark.slow
def test_every_record_has_every_key_with_its_type(smoke_run) -> None:
    number = (int, float)
    for r in models(smoke_run.records):
        missing = set(REQUIRED_FIELDS) - set(r)
        assert not missing, missing
        assert r["schema_version"] == SCHEMA_VERSION
        assert isinstance(r["run_id"], str) and r["run_id"]
        assert type(r["dataset_id"]) is int and type(r["seed"]) is int
        assert (r["dataset_name"], r["task"]) == SMOKE[r["dataset_id"]][:2]
        assert r["framework"] in ("torch", "tensorflow") and r["role"] in ROLES
        assert r["status"] == "ok" and r["error"] is None
        assert isinstance(r["metrics"], dict) and r["primary_metric"] == PRIMARY_METRIC[r["task"]]
        assert isinstance(r["train_seconds"], float) and r["train_seconds"] > 0
        assert isinstance(r["train_cpu_seconds"], float) and r["train_cpu_seconds"] >= 0
        assert type(r["epochs"]) is int and 1 <= r["epochs"] <= 3  # the tiny config's budget
        for key in ("latency_p50_us", "latency_p90_us", "latency_p99_us", "throughput_rows_per_s"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r[key])
        for key in ("n_params", "model_bytes", "macs_per_row"):
            assert type(r[key]) is int and r[key] > 0, (key, r[key])
        for key in DERIVED:
            assert r[key] is None or (isinstance(r[key], number) and math.isfinite(r[key])), (key, r[key])
        assert isinstance(r["call_path"], str) and r["call_path"]
        assert r["threads"] == smoke_run.manifest["threads"]
        assert r["dataset_checksum"] == next(
            d["checksum"] for d in smoke_run.manifest["datasets"] if d["id"] == r["dataset_id"]
        )


@pytest.mark.slow
def test_quality_metrics_per_task(smoke_run) -> None:
    for r in smoke_run.records:
        m = r["metrics"]
        assert set(m) == TASK_METRICS[r["task"]], (r["task"], set(m))
        assert all(isinstance(v, float) and math.isfinite(v) for v in m.values()), m
        if r["task"] == "classification":
            assert 0 <= m["accuracy"] <= 1 and 0 <= m["balanced_accuracy"] <= 1 and 0 <= m["roc_auc"] <= 1
            assert m["log_loss"] > 0
        else:
            assert m["rmse"] > 0 and 0 < m["mae"] <= m["rmse"] and m["r2"] <= 1


@pytest.mark.slow
def test_latency_percentiles_are_ordered_and_single_rows_skip_model_predict(smoke_run) -> None:
    for r in smoke_run.records:
        assert r["latency_p50_us"] <= r["latency_p90_us"] <= r["latency_p99_us"]
    paths = {r["framework"]: r["call_path"] for r in smoke_run.records}
    assert "inference_mode" in paths["torch"]
    assert paths["tensorflow"].startswith("tf.function")


@pytest.mark.slow
def test_derived_numbers_per_role(smoke_run) -> None:
    records = by_key(models(smoke_run.records))
    for (dataset, seed, framework, role), r in records.items():
        teacher = records[(dataset, seed, framework, "teacher")]
        metric = r["primary_metric"]
        if role == "teacher":
            assert all(r[key] is None for key in DERIVED), {key: r[key] for key in DERIVED}
            continue
        assert r["retention"] == pytest.approx(
            metrics.retention(r["metrics"][metric], teacher["metrics"][metric], metric)
        )
        assert r["speedup"] == pytest.approx(teacher["latency_p50_us"] / r["latency_p50_us"])
        assert r["compression"] == pytest.approx(teacher["n_params"] / r["n_params"]) and r["compression"] > 1
        if role == "student_kd":
            scratch = records[(dataset, seed, framework, "student_scratch")]
            assert r["kd_gain"] == pytest.approx(
                metrics.kd_gain(r["metrics"][metric], scratch["metrics"][metric], metric)
            )
        else:
            assert r["kd_gain"] is None


@pytest.mark.slow
def test_sizes_follow_the_architecture(smoke_run) -> None:
    for r in models(smoke_run.records):
        _, _, features, outputs = SMOKE[r["dataset_id"]]
        widths = [16] if r["role"] == "teacher" else [4]
        sizes = [features, *widths, outputs]
        kernels = sum(a * b for a, b in itertools.pairwise(sizes))
        assert r["macs_per_row"] == kernels
        assert r["n_params"] == kernels + sum(sizes[1:])


@pytest.mark.slow
def test_manifest_records_provenance(smoke_run, data, openml_manifest) -> None:
    m = smoke_run.manifest
    assert m["schema_version"] == SCHEMA_VERSION
    assert m["config"] == load_spec(str(data.config)).to_dict()
    assert m["suite"] == "smoke" and m["seeds"] == [0] and m["frameworks"] == ["torch", "tensorflow"]
    assert m["threads"] == os.cpu_count() and m["device"] == "cpu"
    # The code: the commit and dirty flag of this checkout (None for both where it is not one).
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    git = m["environment"]["git"]
    if head.returncode == 0:
        assert git["commit"] == head.stdout.strip() and isinstance(git["dirty"], bool)
    else:
        assert git == {"commit": None, "dirty": None}
    # Python, packages, machine.
    env = m["environment"]
    assert env["python"] == sys.version.split()[0]
    for package in ("torch", "keras", "numpy", "scikit-learn", "openml"):
        assert env["packages"][package] == metadata.version(package)
    assert (
        env["machine"]["cores"] == os.cpu_count() and isinstance(env["machine"]["cpu"], str) and env["machine"]["cpu"]
    )
    # The data: IDs, names, checksums of the data files (those of the shared cache's manifest).
    assert {d["id"]: d["checksum"] for d in m["datasets"]} == {i: openml_manifest[i]["sha256"] for i in SMOKE}
    assert {d["id"]: d["name"] for d in m["datasets"]} == {i: v[0] for i, v in SMOKE.items()}
    # When and how.
    assert isinstance(m["started"], float) and isinstance(m["finished"], float) and m["started"] <= m["finished"]
    records = smoke_run.records
    assert all(m["started"] <= r["started"] <= r["finished"] <= m["finished"] for r in records)
    assert m["command"][1:3] == ["run", "--openml-source"] and "--suite" in m["command"] and "smoke" in m["command"]
    assert 0 <= m["harness_overhead"] <= 1 and 0 < m["measured_seconds"] <= m["wall_seconds"]
    # How the machine was shared: one job at a time, every model timed alone (3 per job).
    sharing = m["sharing"]
    assert (sharing["jobs_at_once"], sharing["threads_per_job"], sharing["timing_overlaps"]) == (1, os.cpu_count(), 0)
    assert sharing["held_seconds"] == 0 and sharing["timed_seconds"] > 0


# ---- retention and distillation gain: both metric directions


def test_metric_directions() -> None:
    assert {name for name in TEST_METRICS if HIGHER_IS_BETTER[name]} == {
        "accuracy",
        "balanced_accuracy",
        "roc_auc",
        "r2",
    }
    assert {name for name in TEST_METRICS if not HIGHER_IS_BETTER[name]} == {"log_loss", "rmse", "mae"}
    assert PRIMARY_METRIC == {"classification": "accuracy", "regression": "rmse"}


@pytest.mark.parametrize(
    "metric, teacher, better, worse",
    [
        ("accuracy", 0.8, 0.9, 0.6),
        ("roc_auc", 0.9, 0.95, 0.7),
        ("r2", 0.5, 0.6, 0.25),
        ("rmse", 4.0, 2.0, 8.0),
        ("mae", 3.0, 1.5, 6.0),
        ("log_loss", 0.5, 0.25, 1.0),
    ],
)
def test_retention_is_100_when_equal_and_above_100_when_the_student_is_better(metric, teacher, better, worse) -> None:
    assert metrics.retention(teacher, teacher, metric) == pytest.approx(100.0)
    assert metrics.retention(better, teacher, metric) > 100.0
    assert metrics.retention(worse, teacher, metric) < 100.0
    # Swapping student and teacher inverts the ratio, in both directions.
    assert metrics.retention(better, teacher, metric) * metrics.retention(teacher, better, metric) == pytest.approx(1e4)


def test_retention_values() -> None:
    assert metrics.retention(0.9, 0.75, "accuracy") == pytest.approx(120.0)
    assert metrics.retention(0.6, 0.75, "accuracy") == pytest.approx(80.0)
    assert metrics.retention(2.0, 4.0, "rmse") == pytest.approx(200.0)  # half the teacher's error: twice as good
    assert metrics.retention(5.0, 4.0, "rmse") == pytest.approx(80.0)
    assert metrics.retention(0.5, 0.0, "accuracy") is None  # undefined, not infinite
    assert metrics.retention(0.0, 4.0, "rmse") is None


@pytest.mark.parametrize(
    "metric, scratch, better, worse",
    [
        ("accuracy", 0.8, 0.9, 0.6),
        ("balanced_accuracy", 0.5, 0.6, 0.4),
        ("r2", -1.0, -0.5, -2.0),
        ("rmse", 4.0, 2.0, 8.0),
        ("mae", 3.0, 1.5, 6.0),
        ("log_loss", 0.5, 0.25, 1.0),
    ],
)
def test_kd_gain_is_positive_when_distillation_helped(metric, scratch, better, worse) -> None:
    assert metrics.kd_gain(scratch, scratch, metric) == 0.0
    assert metrics.kd_gain(better, scratch, metric) > 0
    assert metrics.kd_gain(worse, scratch, metric) < 0


def test_kd_gain_values() -> None:
    assert metrics.kd_gain(0.9, 0.8, "accuracy") == pytest.approx(12.5)
    assert metrics.kd_gain(3.0, 4.0, "rmse") == pytest.approx(25.0)  # 25 % less error than the scratch student
    assert metrics.kd_gain(5.0, 4.0, "rmse") == pytest.approx(-25.0)
    assert metrics.kd_gain(-0.5, -1.0, "r2") == pytest.approx(
        50.0
    )  # relative to |scratch|: the sign still says who won
    assert metrics.kd_gain(0.5, 0.0, "accuracy") is None


@pytest.mark.filterwarnings("ignore:Only one class is present")  # scikit-learn, for the absent class
def test_quality_metric_functions() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    perfect = np.eye(3)[y] * 0.97 + 0.01  # rows sum to 1, the right class most likely
    m = metrics.classification_metrics(y, perfect)
    assert m["accuracy"] == m["balanced_accuracy"] == m["roc_auc"] == 1.0 and 0 < m["log_loss"] < 0.1
    wrong = perfect[:, [1, 2, 0]]
    assert metrics.classification_metrics(y, wrong)["accuracy"] == 0.0
    binary = metrics.classification_metrics(
        np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    )
    assert binary["roc_auc"] == 1.0 and binary["accuracy"] == 1.0
    absent = metrics.classification_metrics(
        np.array([0, 0, 1]), np.full((3, 3), 1 / 3)
    )  # class 2 absent: AUC undefined
    assert absent["roc_auc"] is None
    r = metrics.regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert r["rmse"] == pytest.approx(math.sqrt(4 / 3)) and r["mae"] == pytest.approx(2 / 3)
    assert r["r2"] == pytest.approx(1 - 4 / 2)


# ---- results files: partial lines, the lock


@pytest.mark.slow
def test_a_partial_last_line_is_ignored_and_cut_off_by_resume(smoke_run, data, tmp_path) -> None:
    out = tmp_path / "run"
    shutil.copytree(smoke_run.out, out)
    complete = (out / RECORDS).read_text()
    with open(out / RECORDS, "a") as fh:
        fh.write('{"dataset_id": 61, "seed": 0, "framework": "torch", "role": "tea')  # a kill mid-write
    assert read_records(out) == smoke_run.records

    result = distillbench_run(data, *SMOKE_RUN, "--out", str(out), "--resume", cwd=tmp_path)
    assert_ok(result)
    assert (out / RECORDS).read_text() == complete  # cut back to the last whole line; nothing re-run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["jobs"] == {"planned": 6, "ok": 6, "failed": 0, "missing": 0}
    assert manifest["invocations"][-1]["jobs"] == {"to_run": 0, "skipped_as_done": 6, "ok": 0, "failed": 0}
    assert manifest["status"] == "complete"


def test_a_run_folder_has_one_writer(tmp_path) -> None:
    first = RunFolder(tmp_path)
    try:
        with pytest.raises(UserError, match="another run is writing"):
            RunFolder(tmp_path)
    finally:
        first.close()
    RunFolder(tmp_path).close()  # released with its holder


@pytest.mark.slow
def test_two_runs_on_one_folder_are_refused(data, tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = RunFolder(out)  # this process is the run writing there
    try:
        result = distillbench_run(
            data, "--datasets", "61", "--frameworks", "torch", "--out", str(out), "--resume", cwd=tmp_path
        )
    finally:
        holder.close()
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("distillbench: error:") and "another run is writing" in last, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no records, no manifest


# ---- resume after a kill


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _complete_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_resume_after_a_kill_runs_every_job_exactly_once(data, tmp_path) -> None:
    out = tmp_path / "run"
    # Two jobs; a timing budget long enough that the second is still running when the kill lands.
    args = ["--datasets", "61", "--frameworks", "torch", "--seeds", "2", "--timing-budget", "0.1", "--out", str(out)]
    proc = start_run(data, *args, cwd=tmp_path, stdout=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        # the reference jobs' records and the first torch job's are written
        while _complete_lines(out / RECORDS) < 2 * len(REFERENCES) + len(ROLES):
            assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no job finished within 4 minutes"
            workers = _children(proc.pid) or workers
            time.sleep(0.02)
        workers = _children(proc.pid) or workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL and workers
    try:
        before = (out / RECORDS).read_text()
        killed = read_records(out)
        assert 0 < len(killed) < 2 * (len(REFERENCES) + len(ROLES)), (
            "the kill came after the last job: the test proves nothing"
        )
        assert json.loads((out / "manifest.json").read_text())["status"] == "running"  # valid JSON, never half-written

        resumed = distillbench_run(data, *args, "--resume", cwd=tmp_path)
        assert_ok(resumed)
        assert (out / RECORDS).read_text().startswith(before)  # finished jobs are left as they were
        records = read_records(out)
        assert sorted(keys(records)) == sorted(
            [(61, seed, "torch", role) for seed in range(2) for role in ROLES]
            + [(61, seed, REFERENCE, role) for seed in range(2) for role in REFERENCES]
        )
        assert all(r["status"] == "ok" for r in records)
        manifest = json.loads((out / "manifest.json").read_text())
        done = len({(r["seed"], r["framework"]) for r in killed})
        assert manifest["jobs"] == {"planned": 4, "ok": 4, "failed": 0, "missing": 0}
        assert manifest["invocations"][-1]["jobs"]["skipped_as_done"] == done and done >= 3
        # The killed run's worker finished its job, found nobody listening and ended.
        deadline = time.monotonic() + 120
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers)), f"worker processes {workers} outlived the killed run"
    finally:
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)


# ---- failures: the run goes on


@pytest.fixture(scope="module")
def failing_run(data, tmp_path_factory) -> SimpleNamespace:
    """A run of three datasets: iris fails in its worker (a temperature of 5e-324, the smallest
    float, makes the soft targets NaN, which the pipeline refuses on classification);
    boston cannot load (its target override is not a column); wine, as regression on its 'Alcohol'
    column where the temperature plays no part, runs after both failures in the same worker."""
    cwd = tmp_path_factory.mktemp("failing")
    config = cwd / "nan.toml"
    config.write_text(TINY_CONFIG + "\n[distill]\ntemperature = 5e-324\n")
    suite = write_suite(
        cwd / "failing.toml", '61, { id = 531, target = "no_such_column" }, { id = 187, target = "Alcohol" }'
    )
    out = cwd / "run"
    result = distillbench_run(
        data, "--suite", str(suite), "--frameworks", "torch", "--config", str(config), "--out", str(out), cwd=cwd
    )
    return SimpleNamespace(
        out=out, result=result, records=read_records(out), manifest=json.loads((out / "manifest.json").read_text())
    )


@pytest.mark.slow
def test_a_dataset_that_cannot_load_fails_its_jobs_only(failing_run) -> None:
    assert_ok(failing_run.result)  # failed jobs are results, not errors of the run
    records = {r["dataset_id"]: [] for r in failing_run.records}
    for r in failing_run.records:
        records[r["dataset_id"]].append(r)
    assert sorted(keys(failing_run.records)) == sorted(
        [(d, 0, "torch", role) for d in (61, 531, 187) for role in ROLES]
        + [(d, 0, REFERENCE, role) for d in (61, 531, 187) for role in REFERENCES]
    )
    bad = records[531]
    assert all(r["status"] == "failed" and "no_such_column" in r["error"] for r in bad), [r["error"] for r in bad]
    assert all(set(REQUIRED_FIELDS) <= set(r) and r["metrics"] is None for r in bad)
    assert next(d for d in failing_run.manifest["datasets"] if d["id"] == 531)["error"]
    assert all(r["status"] == "ok" and r["task"] == "regression" for r in records[187])
    # the reference jobs: 531 cannot load for them either; the temperature plays no part in them
    assert failing_run.manifest["jobs"] == {"planned": 6, "ok": 3, "failed": 3, "missing": 0}
    assert "failed" in failing_run.result.stderr


@pytest.mark.slow
def test_strict_exits_1_when_a_job_failed(data, tmp_path) -> None:
    """Without --strict a run with failed jobs exits 0 (they are results: see above); with it, 1, the
    reason in one last line; a run whose jobs all finished exits 0 either way."""
    suite = write_suite(tmp_path / "half.toml", '61, { id = 531, target = "no_such_column" }')
    strict = distillbench_run(
        data, "--suite", str(suite), "--frameworks", "torch", "--out", str(tmp_path / "run"), "--strict", cwd=tmp_path
    )
    assert strict.returncode == 1, strict.stderr[-3000:]
    assert "Traceback" not in strict.stderr
    assert strict.stderr.strip().splitlines()[-1] == (
        f"distillbench: --strict: 5 of 10 records failed (the reasons: distillbench report {tmp_path / 'run'})"
    )
    assert (
        len(read_records(tmp_path / "run")) == 10
    )  # the run itself is complete (3 models and 2 references per dataset)
    # the same folder resumed: every job that can finish is done, the failed ones are still failed
    again = distillbench_run(
        data,
        "--suite",
        str(suite),
        "--frameworks",
        "torch",
        "--out",
        str(tmp_path / "run"),
        "--resume",
        "--strict",
        "-q",
        cwd=tmp_path,
    )
    assert again.returncode == 1 and again.stderr.strip().splitlines()[-1].startswith("distillbench: --strict: 5 of 10")
    clean = distillbench_run(
        data, "--datasets", "61", "--frameworks", "torch", "--out", str(tmp_path / "ok"), "--strict", cwd=tmp_path
    )
    assert_ok(clean)


@pytest.mark.slow
def test_a_job_failing_in_its_worker_does_not_stop_the_others(failing_run) -> None:
    iris = [r for r in failing_run.records if r["dataset_id"] == 61 and r["framework"] == "torch"]
    assert [r["role"] for r in iris] == list(ROLES)
    assert all(
        r["status"] == "failed"
        and r["error"] == "ValueError: the temperature compressor gave non-finite student targets"
        for r in iris
    ), [r["error"] for r in iris]
    assert all(
        r["dataset_name"] == "iris" and r["task"] == "classification" and set(REQUIRED_FIELDS) <= set(r) for r in iris
    )
    wine = [r for r in failing_run.records if r["dataset_id"] == 187]
    assert all(r["status"] == "ok" for r in wine)  # after the failure, in the same worker
    summary = failing_run.result.stdout
    assert re.search(r"^iris\s+torch\s.*\s0/1\s*$", summary, re.M) and re.search(
        r"^wine\s+torch\s.*\s1/0\s*$", summary, re.M
    ), summary


@pytest.mark.slow
def test_a_job_over_its_time_limit_fails_and_the_run_completes(data, tmp_path) -> None:
    out = tmp_path / "run"
    result = distillbench_run(
        data, "--datasets", "61", "--frameworks", "torch", "--job-timeout", "0.01", "--out", str(out), cwd=tmp_path
    )
    assert_ok(result)
    records = read_records(out)
    assert [r["role"] for r in records] == [*REFERENCES, *ROLES]
    assert all(r["status"] == "failed" and "time limit" in r["error"] for r in records), [r["error"] for r in records]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["jobs"]["failed"] == 2


# ---- bad input: one line, non-zero, nothing written


BAD_INPUT = {
    "unknown suite": (["--suite", "no_such_suite"], "unknown suite 'no_such_suite'"),
    "unknown framework": (["--datasets", "61", "--frameworks", "torch,jax"], "unknown framework 'jax'"),
    "zero seeds": (["--datasets", "61", "--seeds", "0"], "argument --seeds: expected a number of seeds from 1 to 1000"),
    "negative seeds": (["--datasets", "61", "--seeds", "-2"], "not '-2'"),
    "out under a file": (["--datasets", "61", "--out", "{tmp}/a-file/run"], "cannot be created"),
    "config does not parse": (["--datasets", "61", "--config", "{tmp}/broken.toml"], "not valid TOML"),
    "config names an unknown field": (
        ["--datasets", "61", "--config", "{tmp}/unknown.toml"],
        "training.epochz: unknown field",
    ),
    "not a dataset ID": (["--datasets", "61,abc"], "--datasets"),
    "dataset ID 0": (["--datasets", "0"], "expected an OpenML dataset ID (a whole number of at least 1), not '0'"),
    "dataset listed twice": (["--suite", "{tmp}/twice.toml"], "dataset 61 listed more than once"),
}


@pytest.fixture(scope="module")
def bad_input_results(data, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every bad-input case at once, each in its own empty folder, as concurrent processes."""
    procs = {}
    for case, (args, _) in BAD_INPUT.items():
        tmp = tmp_path_factory.mktemp("bad-input")
        (tmp / "a-file").write_text("a regular file\n")
        (tmp / "broken.toml").write_text("[training\nepochs = 3\n")
        (tmp / "unknown.toml").write_text("[training]\nepochz = 3\n")
        write_suite(tmp / "twice.toml", '61, { id = 61, target = "sepalwidth" }')
        args = [a.replace("{tmp}", str(tmp)) for a in args]
        if "--out" not in args:
            args += ["--out", str(tmp / "run")]
        procs[case] = (start_run(data, *args, cwd=tmp), args, tmp)
    results = {}
    for case, (proc, args, tmp) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        results[case] = (subprocess.CompletedProcess(args, proc.returncode, stdout, stderr), tmp)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line_nonzero_and_writes_nothing(case, bad_input_results) -> None:
    result, tmp = bad_input_results[case]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if "error" in line]
    assert errors == [lines[-1]] and lines[-1].startswith("distillbench: error:"), result.stderr
    assert BAD_INPUT[case][1] in lines[-1], lines[-1]
    assert sorted(p.name for p in tmp.iterdir()) == ["a-file", "broken.toml", "twice.toml", "unknown.toml"]
    assert result.stdout == ""


# ---- determinism across worker reuse


@pytest.mark.slow
def test_a_fresh_process_per_job_gives_the_same_quality_as_a_reused_worker(smoke_run, data, tmp_path) -> None:
    """In the smoke run each framework's worker ran iris, then boston; here boston gets new processes."""
    out = tmp_path / "run"
    result = distillbench_run(
        data,
        "--datasets",
        "531",
        "--frameworks",
        "torch,tensorflow",
        "--fresh-process",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert_ok(result)
    assert json.loads((out / "manifest.json").read_text())["worker"].startswith("fresh process per job")
    fresh = by_key(read_records(out))
    reused = {k: r for k, r in by_key(smoke_run.records).items() if k[0] == 531}
    assert fresh.keys() == reused.keys() and len(fresh) == 8  # 2 frameworks x 3 roles, and the 2 references
    for key, r in fresh.items():
        assert r["status"] == "ok"
        assert r["metrics"] == reused[key]["metrics"], key  # bit-identical, not approximately equal
        assert (r["epochs"], r["best_epoch"], r["n_params"]) == (
            reused[key]["epochs"],
            reused[key]["best_epoch"],
            reused[key]["n_params"],
        )
