"""Regression tracking: `distillbench compare` and `distillbench baseline update`.

First on synthetic run folders: records with every key a real run writes (``record.new_record``), a
manifest stamped with this machine's real provenance (``env.environment()``), written by the
harness's own ``RunFolder``; the test changes what it needs (a quality drop, a missing or failed job,
another machine) and checks the verdicts and exit codes. Then the real thing: two runs of the smoke
suite with the same seeds compare clean.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_command
from distillbench.benchmarks.store.record import REQUIRED_FIELDS, SCHEMA_VERSION, new_record
from distillbench.benchmarks.store.run_folder import RunFolder, read_records
from distillbench.benchmarks.tracking.baseline import update_baseline
from distillbench.benchmarks.tracking.compare import compare_runs
from distillbench.benchmarks.tracking.comparison_text import comparison_json, format_comparison
from distillbench.benchmarks.tracking.run_differences import machine_differences
from distillbench.benchmarks.tracking.verdicts import IMPROVED, REGRESSED, UNCHANGED, Thresholds
from distillbench.cli import main
from distillbench.datasets.sources import CACHE_ENV, SOURCE_ENV
from distillbench.env import environment
from distillbench.errors import UserError
from distillbench.implementations.roles import REFERENCES, ROLES
from distillbench.implementations.spec import PipelineSpec

ENV = environment()
SEEDS = (0, 1, 2)
FRAMEWORKS = ("torch", "tensorflow")
# Per-seed offsets: the seed-to-seed spread of the synthetic quality metrics (sd 0.03 for accuracy),
# the same in every run (seed k = the same split in every run).
SPREAD = (-0.03, 0.0, 0.03)
# What a re-run with other random draws adds per seed (sd 0.02): the noise of a paired comparison.
JITTER = (0.02, -0.02, 0.0)
TINY_CONFIG = """\
name = "tiny"

[teacher]
widths = [16]

[student]
widths = [4]

[training]
epochs = 3
patience = 2
"""


# ---- synthetic runs


def make_record(run_id: str, dataset_id: int, seed: int, framework: str, role: str) -> dict:
    """One ok record as a job writes it, with quality that depends on the seed (the noise)."""
    classification = dataset_id == 61
    offset = SPREAD[seed % len(SPREAD)]
    quality = {"teacher": 0.0, "student_kd": -0.01, "student_scratch": -0.03}[role]
    if classification:
        metrics = {
            "accuracy": 0.90 + quality + offset,
            "balanced_accuracy": 0.89 + quality + offset,
            "log_loss": 0.30 - quality - offset,
            "roc_auc": 0.97 + quality / 2 + offset / 3,
        }
    else:
        metrics = {
            "rmse": 4.0 - 10 * quality - 10 * offset,
            "mae": 3.0 - 8 * quality - 8 * offset,
            "r2": 0.80 + quality + offset,
        }
    latency = {"teacher": 200.0, "student_kd": 40.0, "student_scratch": 40.0}[role] * (1 + offset)
    record = new_record(
        run_id=run_id,
        dataset_id=dataset_id,
        dataset_name="iris" if classification else "boston",
        task="classification" if classification else "regression",
        framework=framework,
        framework_version="2.13.0" if framework == "torch" else "2.21.0",
        seed=seed,
        role=role,
        status="ok",
        metrics=metrics,
        primary_metric="accuracy" if classification else "rmse",
        train_seconds=(3.0 if role == "teacher" else 1.0) * (1 + offset),
        train_cpu_seconds=2.0,
        epochs=20,
        best_epoch=15,
        seconds_per_epoch=0.1,
        peak_rss_mb=300.0,
        latency_p50_us=latency,
        latency_p90_us=latency * 1.2,
        latency_p99_us=latency * 2,
        throughput_rows_per_s=1e6 / latency * 100,
        throughput_batch=4096,
        call_path="synthetic",
        n_params=1000 if role == "teacher" else 100,
        model_bytes=4000,
        macs_per_row=900,
        threads=2,
        device="cpu",
        machine=ENV["machine"],
        dataset_checksum="abc",
        measure_seconds=1.0,
        started=1.0,
        finished=2.0,
    )
    if role != "teacher":
        record.update(retention=97.0 + 100 * quality + 10 * offset, speedup=5.0, compression=10.0)
    if role == "student_kd":
        record["kd_gain"] = 2.0 + 10 * offset
    return record


def make_records(run_id: str = "run", seeds=SEEDS, frameworks=FRAMEWORKS) -> list[dict]:
    return [make_record(run_id, d, s, f, r) for d in (61, 531) for s in seeds for f in frameworks for r in ROLES]


def make_manifest(run_id: str, seeds=SEEDS, **changes) -> dict:
    now = time.time()
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": "complete",
        "suite": "smoke",
        "config": PipelineSpec().to_dict(),
        "seeds": list(seeds),
        "frameworks": list(FRAMEWORKS),
        "threads": 2,
        "device": "cpu",
        "timing_budget_s": 2.0,
        "environment": copy.deepcopy(ENV),
        "started": now - 60,
        "finished": now,
        "datasets": [{"id": 61, "name": "iris", "checksum": "abc"}, {"id": 531, "name": "boston", "checksum": "def"}],
        "jobs": {"planned": len(seeds) * 2 * len(FRAMEWORKS)},
    }
    manifest.update(changes)
    return manifest


def write_run(path: Path, records: list[dict], manifest: dict | None = None) -> Path:
    path.mkdir(parents=True)
    folder = RunFolder(path)
    folder.append(records)
    folder.write_manifest(manifest or make_manifest(path.name))
    folder.close()
    (path / ".lock").unlink()
    return path


def edit(records: list[dict], dataset_id: int, framework: str, role: str, fn) -> list[dict]:
    """Apply ``fn`` to the records of this (dataset, framework, role), every seed."""
    for r in records:
        if (r["dataset_id"], r["framework"], r["role"]) == (dataset_id, framework, role):
            fn(r)
    return records


def pair(
    tmp_path: Path, candidate: list[dict], baseline: list[dict] | None = None, candidate_manifest: dict | None = None
) -> tuple[Path, Path]:
    base = write_run(tmp_path / "baseline", baseline or make_records("baseline"))
    cand = write_run(tmp_path / "candidate", candidate, candidate_manifest)
    return base, cand


def rows_of(comparison, **where) -> list:
    return [r for r in comparison.rows if all(getattr(r, k) == v for k, v in where.items())]


def changed(comparison) -> list[tuple]:
    return [(r.dataset, r.framework, r.role, r.metric, r.verdict) for r in comparison.rows if r.verdict != UNCHANGED]


# ---- quality


def test_identical_runs_compare_clean(tmp_path) -> None:
    base, cand = pair(tmp_path, make_records("candidate"))
    comparison = compare_runs(base, cand)
    assert changed(comparison) == [] and comparison.jobs == [] and comparison.machine_differences == []
    # every (dataset, framework, role, metric) of both runs is a row: 4 + 3 quality metrics, retention
    # for the students, kd_gain and kd_vs_scratch_% for the distilled one, 3 timings
    assert len(comparison.rows) == len(FRAMEWORKS) * ((4 + 3) * 3 + 2 * 2 + 2 + 2 + 3 * 3 * 2)
    for fail_on in ("quality", "timing", "all", "none"):
        assert comparison.exit_code(fail_on) == 0


def accuracy_drop(drop: float, jitter=JITTER):
    def fn(r: dict) -> None:
        r["metrics"]["accuracy"] += -drop + jitter[r["seed"] % len(jitter)]

    return fn


def test_a_quality_drop_beyond_the_noise_is_flagged(tmp_path) -> None:
    candidate = edit(make_records("candidate"), 61, "torch", "student_kd", accuracy_drop(0.10))
    comparison = compare_runs(*pair(tmp_path, candidate))
    assert changed(comparison) == [("iris", "torch", "student_kd", "accuracy", REGRESSED)]
    row = rows_of(comparison, framework="torch", role="student_kd", metric="accuracy")[0]
    # per-seed differences -0.08, -0.12, -0.10: SE = 0.02 / sqrt(3), 2 SE = 0.023 > floor 0.01
    assert row.change == pytest.approx(-0.10) and row.threshold == pytest.approx(0.0231, abs=1e-4)
    assert row.basis == "2 SE paired"
    assert comparison.exit_code("quality") == 1 and comparison.exit_code("all") == 1
    assert comparison.exit_code("timing") == 0 and comparison.exit_code("none") == 0
    text = format_comparison(comparison, "quality")
    regressions = text[text.index("REGRESSIONS") : text.index("EVERY ROW")]
    assert "student_kd" in regressions and "REGRESSED" in regressions and "teacher" not in regressions


def test_a_quality_drop_inside_the_noise_is_not_flagged(tmp_path) -> None:
    # per-seed differences +0.005, -0.035, -0.015: a mean drop of 0.015, beyond the floor (0.01) but
    # inside 2 SE (0.023)
    candidate = edit(make_records("candidate"), 61, "torch", "student_kd", accuracy_drop(0.015))
    comparison = compare_runs(*pair(tmp_path, candidate))
    assert changed(comparison) == []
    assert comparison.exit_code("all") == 0
    # with k = 0 the floor alone decides
    strict = compare_runs(tmp_path / "baseline", tmp_path / "candidate", Thresholds(k=0.0))
    assert changed(strict) == [("iris", "torch", "student_kd", "accuracy", REGRESSED)]


def test_pairing_by_seed_removes_the_split_to_split_spread(tmp_path) -> None:
    # a steady drop of 0.03 on every seed: the runs' own spread (sd 0.03, the splits) hides it from an
    # unpaired comparison (2 SE = 0.049); the per-seed differences do not vary, so paired it stands out
    candidate = edit(make_records("candidate"), 61, "torch", "student_kd", accuracy_drop(0.03, jitter=(0.0,)))
    base, cand = pair(tmp_path, candidate)
    assert changed(compare_runs(base, cand)) == [("iris", "torch", "student_kd", "accuracy", REGRESSED)]
    unpaired = compare_runs(base, cand, Thresholds(paired=False))
    assert changed(unpaired) == []
    assert {r.basis for r in rows_of(unpaired, dataset_id=61, metric="accuracy")} == {"2 SE unpaired"}
    # no seed in common: unpaired, whatever the option says
    other_seeds = write_run(
        tmp_path / "other-seeds", make_records("other", seeds=(3, 4, 5)), make_manifest("other-seeds", seeds=(3, 4, 5))
    )
    comparison = compare_runs(base, other_seeds)
    assert {r.basis for r in rows_of(comparison, dataset_id=61, metric="accuracy")} == {"2 SE unpaired"}
    assert {j.status for j in comparison.jobs} == {"missing", "new"}


def test_a_lost_distillation_term_is_flagged_on_the_distilled_students(tmp_path) -> None:
    """alpha forced to 1: the distilled student is the scratch student, bit for bit, in every seed."""
    candidate = make_records("candidate")
    scratch = {(r["dataset_id"], r["seed"], r["framework"]): r for r in candidate if r["role"] == "student_scratch"}
    for r in candidate:
        if r["role"] == "student_kd" and r["dataset_id"] == 531:
            twin = scratch[(r["dataset_id"], r["seed"], r["framework"])]
            r.update(metrics=dict(twin["metrics"]), retention=twin["retention"], kd_gain=0.0)
    comparison = compare_runs(*pair(tmp_path, candidate))
    lost = [r for r in comparison.rows if r.metric == "kd_vs_scratch_%" and r.verdict == REGRESSED]
    assert [(r.dataset, r.framework, r.role) for r in lost] == [
        ("boston", "tensorflow", "student_kd"),
        ("boston", "torch", "student_kd"),
    ]
    assert all(r.role == "student_kd" for r in comparison.rows if r.verdict == REGRESSED)
    assert comparison.exit_code("quality") == 1
    assert any("the teacher had no effect" in note for note in comparison.notes)
    # a baseline whose students are already the same model does not flag it again
    again = compare_runs(tmp_path / "candidate", tmp_path / "candidate")
    assert [r.verdict for r in again.rows if r.metric == "kd_vs_scratch_%"] == [UNCHANGED] * 4


def test_directions_lower_is_better_metrics_and_improvements(tmp_path) -> None:
    candidate = edit(
        make_records("candidate"),
        531,
        "torch",
        "teacher",
        lambda r: r["metrics"].update(rmse=r["metrics"]["rmse"] + 1.5, r2=r["metrics"]["r2"] + 0.2),
    )
    comparison = compare_runs(*pair(tmp_path, candidate))
    assert sorted(changed(comparison)) == [
        ("boston", "torch", "teacher", "r2", IMPROVED),
        ("boston", "torch", "teacher", "rmse", REGRESSED),
    ]


def test_the_floor_decides_when_the_runs_have_no_spread(tmp_path) -> None:
    flat = make_records("baseline")
    for r in flat:
        if r["dataset_id"] == 61:
            r["metrics"]["accuracy"] = 0.9
    small = edit(copy.deepcopy(flat), 61, "torch", "teacher", lambda r: r["metrics"].update(accuracy=0.895))
    edit(small, 61, "tensorflow", "teacher", lambda r: r["metrics"].update(accuracy=0.88))
    comparison = compare_runs(*pair(tmp_path, small, baseline=flat))
    assert changed(comparison) == [("iris", "tensorflow", "teacher", "accuracy", REGRESSED)]
    assert {r.basis for r in rows_of(comparison, metric="accuracy")} == {"floor"}
    # a floor given on the command line replaces the default one
    loose = compare_runs(
        tmp_path / "baseline", tmp_path / "candidate", Thresholds(floors={**Thresholds().floors, "accuracy": "0.05"})
    )
    assert changed(loose) == []


def test_one_seed_per_run_falls_back_to_the_floor_and_says_so(tmp_path) -> None:
    baseline = make_records("baseline", seeds=(0,))
    candidate = edit(
        make_records("candidate", seeds=(0,)),
        61,
        "torch",
        "student_kd",
        lambda r: r["metrics"].update(accuracy=r["metrics"]["accuracy"] - 0.02),
    )
    base = write_run(tmp_path / "baseline", baseline, make_manifest("baseline", seeds=(0,)))
    cand = write_run(tmp_path / "candidate", candidate, make_manifest("candidate", seeds=(0,)))
    comparison = compare_runs(base, cand)
    assert ("iris", "torch", "student_kd", "accuracy", REGRESSED) in changed(comparison)
    assert {r.basis for r in comparison.rows if r.kind == "quality" and r.metric != "kd_vs_scratch_%"} == {
        "floor only: 1 seed"
    }
    assert any("one seed" in note and "floor alone" in note for note in comparison.notes)
    assert "floor alone" in format_comparison(comparison, "quality")


# ---- jobs


def test_a_missing_job_is_a_regression(tmp_path) -> None:
    candidate = [
        r for r in make_records("candidate") if (r["dataset_id"], r["seed"], r["framework"]) != (531, 1, "torch")
    ]
    comparison = compare_runs(*pair(tmp_path, candidate))
    assert [(j.dataset_id, j.seed, j.framework, j.status, sorted(j.roles)) for j in comparison.jobs] == [
        (531, 1, "torch", "missing", sorted(ROLES))
    ]
    for fail_on in ("quality", "timing", "all"):
        assert comparison.exit_code(fail_on) == 1
    assert comparison.exit_code("none") == 0
    assert "MISSING" in format_comparison(comparison, "quality")


def test_a_failed_job_is_a_regression_with_its_reason(tmp_path) -> None:
    candidate = make_records("candidate")
    for r in candidate:
        if (r["dataset_id"], r["seed"], r["framework"]) == (61, 2, "tensorflow"):
            for key in REQUIRED_FIELDS[REQUIRED_FIELDS.index("error") :]:  # what a failed job has no value of
                r[key] = None
            r.update(status="failed", error="TrainingDiverged: validation loss is nan at epoch 3")
    comparison = compare_runs(*pair(tmp_path, candidate))
    assert [(j.dataset_id, j.seed, j.framework, j.status) for j in comparison.jobs] == [(61, 2, "tensorflow", "failed")]
    assert comparison.exit_code("quality") == 1
    text = format_comparison(comparison, "quality")
    assert "FAILED" in text and "validation loss is nan" in text
    # the other seeds of that cell are still compared
    assert all(len(r.candidate) == 2 for r in rows_of(comparison, dataset_id=61, framework="tensorflow"))


def test_a_metric_that_becomes_null_or_vanishes_is_a_regression(tmp_path, capsys) -> None:
    """Ok records whose numbers are gone (NaN written as null, a metric no longer computed) are not
    dropped from the comparison: each (cell, metric) a number in the baseline is a regression."""
    candidate = make_records("candidate")
    edit(candidate, 61, "tensorflow", "student_kd", lambda r: r["metrics"].update(accuracy=None))  # every seed
    edit(candidate, 531, "torch", "teacher", lambda r: r["metrics"].pop("mae"))  # vanished
    for r in candidate:
        if (r["dataset_id"], r["seed"], r["framework"], r["role"]) == (531, 2, "tensorflow", "student_scratch"):
            r["metrics"]["rmse"] = None  # one seed of three: the other two must not hide it
    base, cand = pair(tmp_path, candidate)
    comparison = compare_runs(base, cand)
    lost = {(r.dataset_id, r.framework, r.role, r.metric, r.lost) for r in comparison.rows if r.lost}
    assert lost == {
        (61, "tensorflow", "student_kd", "accuracy", (0, 1, 2)),
        (531, "torch", "teacher", "mae", (0, 1, 2)),
        (531, "tensorflow", "student_scratch", "rmse", (2,)),
    }
    assert all(r.verdict == REGRESSED and r.fails for r in comparison.rows if r.lost)
    assert not comparison.jobs  # every record is there and ok: only the rows say what was lost
    assert comparison.exit_code("quality") == 1 and comparison.exit_code("timing") == 0
    text = format_comparison(comparison, "quality")
    assert "3 failing rows" in text and "lost in seed 0, 1, 2" in text and "lost in seed 2" in text

    # a timing number lost fails on timing, even when the machines differ (nothing to be noisy about)
    timing = edit(make_records("timing"), 61, "torch", "teacher", lambda r: r.update(latency_p50_us=None))
    manifest = make_manifest("timing", threads=64)
    comparison = compare_runs(base, write_run(tmp_path / "timing", timing, manifest))
    assert comparison.timing_advisory
    assert [(r.metric, r.kind, r.lost) for r in comparison.rows if r.fails] == [("latency_p50_us", "timing", (0, 1, 2))]
    assert comparison.exit_code("timing") == 1 and comparison.exit_code("quality") == 0

    assert main(["compare", str(base), str(cand), "--fail-on", "quality"]) == 1
    regressions = capsys.readouterr().out.split("REGRESSIONS")[1].split("EVERY ROW")[0]
    assert regressions.count("lost in seed") == 3 and regressions.count("REGRESSED") == 3


def test_new_jobs_are_reported_and_do_not_fail(tmp_path) -> None:
    candidate = make_records("candidate", seeds=(0, 1, 2, 3))
    comparison = compare_runs(
        *pair(tmp_path, candidate, candidate_manifest=make_manifest("candidate", seeds=(0, 1, 2, 3)))
    )
    assert {(j.seed, j.status) for j in comparison.jobs} == {(3, "new")}
    assert comparison.exit_code("all") == 0


def test_a_model_newly_ending_on_its_budget_is_reported_not_failed(tmp_path) -> None:
    def ended(how: str, flags: list[str]):
        return lambda r: r.update(stop_reason=how, flags=flags)

    baseline = make_records("baseline")
    for r in baseline:
        ended("early_stopping", [])(r)
    candidate = copy.deepcopy(baseline)
    edit(candidate, 531, "torch", "student_kd", ended("max_steps", ["budget"]))
    candidate[0]["flags"] = ["below_linear"]  # iris, seed 0, torch teacher: one seed newly flagged
    baseline[1]["flags"] = ["budget"]  # iris, seed 0, torch student_kd: flagged in the baseline only
    comparison = compare_runs(*pair(tmp_path, candidate, baseline=baseline))
    assert [(f.dataset, f.framework, f.role, f.flag, f.baseline, f.candidate, f.status) for f in comparison.flags] == [
        ("boston", "torch", "student_kd", "budget", 0, 3, "newly"),
        ("iris", "torch", "teacher", "below_linear", 0, 1, "newly"),
        ("iris", "torch", "student_kd", "budget", 1, 0, "cleared"),
    ]
    assert comparison.exit_code("all") == 0  # reported, never failed on
    text = format_comparison(comparison, "all")
    assert "2 newly flagged models (reported, not failed on)" in text
    flags = text[text.index("FLAGS newly raised or cleared") : text.index("EVERY ROW")]
    assert "ended on the training budget" in flags and "3 of 3" in flags and "newly" in flags
    assert [(f["flag"], f["status"]) for f in comparison_json(comparison, "all")["flags"]] == [
        ("budget", "newly"),
        ("below_linear", "newly"),
        ("budget", "cleared"),
    ]
    # a baseline from before the flags existed says nothing about them: nothing is reported
    old = [{k: v for k, v in r.items() if k not in ("flags", "stop_reason")} for r in make_records("old")]
    assert compare_runs(write_run(tmp_path / "old", old), tmp_path / "candidate").flags == []


# ---- timing and machines


def slower(factor: float):
    def fn(r: dict) -> None:
        r["latency_p50_us"] *= factor
        r["throughput_rows_per_s"] /= factor

    return fn


def test_a_timing_regression_on_the_same_machine_fails_on_timing(tmp_path) -> None:
    candidate = edit(make_records("candidate"), 531, "torch", "student_kd", slower(3.0))
    comparison = compare_runs(*pair(tmp_path, candidate))
    assert sorted(changed(comparison)) == [
        ("boston", "torch", "student_kd", "latency_p50_us", REGRESSED),
        ("boston", "torch", "student_kd", "throughput_rows_per_s", REGRESSED),
    ]
    row = rows_of(comparison, metric="latency_p50_us", dataset_id=531, framework="torch", role="student_kd")[0]
    assert row.change == pytest.approx(3.0) and row.p_value == pytest.approx(0.05) and not row.advisory
    assert comparison.exit_code("timing") == 1 and comparison.exit_code("all") == 1
    assert comparison.exit_code("quality") == 0


def test_a_timing_change_within_the_threshold_is_unchanged(tmp_path) -> None:
    candidate = edit(make_records("candidate"), 531, "torch", "student_kd", slower(1.15))
    assert changed(compare_runs(*pair(tmp_path, candidate))) == []


def test_a_machine_mismatch_is_reported_and_makes_timing_advisory(tmp_path) -> None:
    manifest = make_manifest("candidate", threads=1)
    manifest["environment"]["machine"] = {**ENV["machine"], "cpu": "Some Other CPU", "cores": 64}
    manifest["environment"]["packages"] = {**ENV["packages"], "torch": "9.9.9"}
    candidate = edit(make_records("candidate"), 531, "torch", "student_kd", slower(3.0))
    for r in candidate:
        r["machine"] = manifest["environment"]["machine"]
    comparison = compare_runs(*pair(tmp_path, candidate, candidate_manifest=manifest))
    differences = " | ".join(comparison.machine_differences)
    assert "Some Other CPU" in differences and "cores" in differences and "threads: 2 vs 1" in differences
    assert "torch" in differences and "the jobs ran on" in differences
    regressed = [r for r in comparison.rows if r.verdict == REGRESSED]
    assert regressed and all(r.kind == "timing" and r.advisory for r in regressed)
    for fail_on in ("timing", "all"):
        assert comparison.exit_code(fail_on) == 0
    text = format_comparison(comparison, "all")
    assert "MACHINES DIFFER" in text and "advisory" in text and "regressed (advisory)" in text


def test_machine_differences_ignore_the_host_name() -> None:
    other = copy.deepcopy(make_manifest("x"))
    other["environment"]["hostname"] = "another-ci-runner"
    assert machine_differences(make_manifest("x"), other) == []


def test_config_differences_are_noted(tmp_path) -> None:
    config = PipelineSpec().to_dict()
    config["distill"]["alpha"] = 1.0
    comparison = compare_runs(
        *pair(tmp_path, make_records("candidate"), candidate_manifest=make_manifest("candidate", config=config))
    )
    assert any("distill.alpha: 0.5 -> 1.0" in note for note in comparison.notes)


# ---- the command


def distillbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (CACHE_ENV, SOURCE_ENV)}
    return subprocess.run(
        [sys.executable, "-m", "distillbench.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.mark.slow
def test_cli_exit_codes(tmp_path, capsys) -> None:
    base = write_run(tmp_path / "baseline", make_records("baseline"))
    same = write_run(tmp_path / "same", make_records("same"))
    worse = write_run(
        tmp_path / "worse",
        edit(
            make_records("worse"),
            61,
            "tensorflow",
            "student_kd",
            lambda r: r["metrics"].update(accuracy=r["metrics"]["accuracy"] - 0.2),
        ),
    )
    (tmp_path / "empty").mkdir()
    md = tmp_path / "compare.md"

    # the installed command, as CI runs it: 0 clean, 1 regression, 2 usage error
    clean = distillbench("compare", str(base), str(same), "--fail-on", "quality")
    assert clean.returncode == 0, clean.stderr
    assert "result: ok" in clean.stdout
    bad = distillbench("compare", str(base), str(worse), "--fail-on", "quality", "--md", str(md))
    assert bad.returncode == 1, bad.stderr
    assert "result: FAIL" in bad.stdout and "Traceback" not in bad.stderr
    markdown = md.read_text()
    assert "## Regressions" in markdown and "| iris | tensorflow | student_kd | accuracy |" in markdown
    usage = distillbench("compare", str(base), str(tmp_path / "nowhere"))
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert usage.stderr.startswith("distillbench: error:") and len(usage.stderr.strip().splitlines()) == 1

    # the same entry point in this process, for the other cases
    assert main(["compare", str(base), str(worse), "--fail-on", "none"]) == 0
    assert main(["compare", str(base), str(worse), "--fail-on", "timing"]) == 0
    assert main(["compare", str(base), str(worse)]) == 1  # default: --fail-on all
    capsys.readouterr()
    for args in (
        ["compare", str(tmp_path / "empty"), str(base)],
        ["compare", str(base), str(same), "--floor", "accuracy"],
        ["compare", str(base), str(same), "--floor", "speed=1"],
        ["compare", str(base), str(same), "--md", str(tmp_path / "no" / "such" / "x.md")],
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("distillbench: error:") and len(err.strip().splitlines()) == 1, err
    for args in (["--fail-on", "sometimes"], ["--alpha", "2"]):  # refused by the parser itself, in one line too
        with pytest.raises(SystemExit) as exc:
            main(["compare", str(base), str(same), *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("distillbench: error:") and len(err.strip().splitlines()) == 1, err


def test_compare_json_gives_every_verdict_for_machines(tmp_path, capsys) -> None:
    """`compare --json FILE` (or `-` for stdout instead of the text): the result and exit status, and
    every row and job with its verdict, as strict JSON that agrees with the exit status."""
    base = write_run(tmp_path / "baseline", make_records("baseline"))
    candidate = edit(
        make_records("worse"),
        61,
        "tensorflow",
        "student_kd",
        lambda r: r["metrics"].update(accuracy=r["metrics"]["accuracy"] - 0.2),
    )
    candidate = [r for r in candidate if (r["dataset_id"], r["seed"], r["framework"]) != (531, 1, "torch")]
    worse = write_run(tmp_path / "worse", candidate)

    assert main(["compare", str(base), str(worse), "--fail-on", "quality", "--json", "-"]) == 1
    out = capsys.readouterr().out
    verdicts = json.loads(out, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    summary = (verdicts["schema"], verdicts["result"], verdicts["exit_code"], verdicts["fail_on"])
    assert summary == (1, "fail", 1, "quality")
    assert verdicts["baseline"]["path"] == str(base) and verdicts["candidate"]["run_id"] == "worse"
    failing = [(r["dataset"], r["framework"], r["role"], r["metric"]) for r in verdicts["rows"] if r["fails"]]
    assert ("iris", "tensorflow", "student_kd", "accuracy") in failing
    assert all(r["verdict"] == "regressed" for r in verdicts["rows"] if r["fails"])
    assert [(j["dataset_id"], j["seed"], j["framework"], j["status"], j["fails"]) for j in verdicts["jobs"]] == [
        (531, 1, "torch", "missing", True)
    ]
    assert verdicts["failing"] == {"rows": len(failing), "jobs": 1}
    assert sum(verdicts["counts"]["quality"].values()) == sum(r["kind"] == "quality" for r in verdicts["rows"])
    assert verdicts["thresholds"]["k"] == 2.0 and verdicts["thresholds"]["floors"]["accuracy"] == "0.01"

    # to a file, beside the text; --fail-on none: the same rows, nothing fails
    assert main(["compare", str(base), str(worse), "--fail-on", "none", "--json", str(tmp_path / "v.json")]) == 0
    assert "result: ok" in capsys.readouterr().out
    written = json.loads((tmp_path / "v.json").read_text())
    assert (written["result"], written["exit_code"]) == ("ok", 0) and not any(r["fails"] for r in written["rows"])
    assert [r["verdict"] for r in written["rows"]] == [r["verdict"] for r in verdicts["rows"]]


def test_runs_of_an_older_schema_are_read_and_a_newer_one_is_refused(tmp_path, capsys) -> None:
    old = make_records("old")
    for r in old:
        del r["schema_version"]
    manifest = make_manifest("old")
    del manifest["schema_version"]
    base = write_run(tmp_path / "old", old, manifest)  # version 1: no schema_version anywhere
    new = write_run(tmp_path / "new", make_records("new"))
    assert all(r["schema_version"] == SCHEMA_VERSION for r in read_records(new))
    comparison = compare_runs(base, new)
    assert comparison.exit_code("all") == 0 and not changed(comparison)
    assert all(r.change == 0 for r in comparison.rows if r.kind == "quality")

    future_manifest = write_run(
        tmp_path / "m", make_records("m"), make_manifest("m", schema_version=SCHEMA_VERSION + 1)
    )
    future_records = write_run(tmp_path / "r", [r | {"schema_version": SCHEMA_VERSION + 1} for r in make_records("r")])
    for future, file in ((future_manifest, "manifest.json"), (future_records, "records.jsonl")):
        for args in (
            ["compare", str(base), str(future)],
            ["report", str(future), "--out", str(tmp_path / "report")],
            ["history", str(future), "--out", str(tmp_path / "history")],
            ["baseline", "update", str(future), "--baselines", str(tmp_path / "baselines")],
        ):
            assert main(args) == 2, args
            err = capsys.readouterr().err
            assert err.startswith(
                f"distillbench: error: {future / file}: written with schema version "
                f"{SCHEMA_VERSION + 1}, but this distillbench reads versions 1 to {SCHEMA_VERSION}"
            ), err
            assert len(err.strip().splitlines()) == 1, err


# ---- baselines


def test_baseline_update_copies_a_run_and_compare_takes_its_name(tmp_path, capsys) -> None:
    run = write_run(tmp_path / "results" / "20260101-000000-smoke", make_records("r1"))
    baselines = tmp_path / "results" / "baselines"
    target = update_baseline(run, baselines=baselines)
    assert target == baselines / "smoke"
    assert sorted(p.name for p in target.iterdir()) == ["baseline.json", "manifest.json", "records.jsonl"]
    assert (target / "records.jsonl").read_bytes() == (run / "records.jsonl").read_bytes()
    assert json.loads((target / "baseline.json").read_text())["run_id"] == "20260101-000000-smoke"

    # a second update replaces the folder as a whole and leaves nothing behind
    second = write_run(
        tmp_path / "results" / "20260102-000000-smoke",
        make_records("r2", seeds=(0, 1)),
        make_manifest("20260102-000000-smoke", seeds=(0, 1)),
    )  # a run that planned 2 seeds, not 3
    update_baseline(second, baselines=baselines)
    assert len(read_records(target)) == len(make_records("r2", seeds=(0, 1)))
    assert sorted(p.name for p in baselines.iterdir()) == ["smoke"]

    # compare accepts the baseline by name, from the folder holding results/
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert main(["compare", "smoke", str(second), "--fail-on", "quality"]) == 0
    finally:
        os.chdir(old)
    assert "results/baselines/smoke" in capsys.readouterr().out


def test_baseline_update_refuses_failed_or_unfinished_runs(tmp_path, capsys) -> None:
    records = make_records("r")
    records[0].update(status="failed", error="RuntimeError: boom")
    failed = write_run(tmp_path / "failed", records)
    baselines = tmp_path / "baselines"
    with pytest.raises(UserError, match="failed jobs"):
        update_baseline(failed, baselines=baselines)
    assert not (baselines / "smoke").exists()
    assert update_baseline(failed, "with-failures", allow_failed=True, baselines=baselines).is_dir()

    running = write_run(tmp_path / "running", make_records("r"), make_manifest("running", status="running"))
    with pytest.raises(UserError, match="not complete"):
        update_baseline(running, baselines=baselines)
    custom = write_run(tmp_path / "custom", make_records("r"), make_manifest("custom", suite=None))
    with pytest.raises(UserError, match="--name"):
        update_baseline(custom, baselines=baselines)
    with pytest.raises(UserError, match="plain folder name"):
        update_baseline(custom, "../escape", baselines=baselines)
    with pytest.raises(UserError, match="not a run folder"):
        update_baseline(tmp_path / "nowhere", baselines=baselines)
    # the command: exit 2 and one line
    assert main(["baseline", "update", str(failed), "--baselines", str(baselines)]) == 2
    assert "failed jobs" in capsys.readouterr().err


# ---- the real thing: two runs of the smoke suite with the same seeds


@pytest.fixture(scope="module")
def smoke_runs(openml_source, tmp_path_factory) -> tuple[Path, Path]:
    """Two runs of the smoke suite, torch, seeds 0 and 1, the tiny config. They run side by side, one
    thread each, each with its own writable OpenML cache (nothing shared but the read-only source)."""
    folder = tmp_path_factory.mktemp("smoke-runs")
    config = folder / "tiny.toml"
    config.write_text(TINY_CONFIG)
    env = {k: v for k, v in os.environ.items() if k not in (CACHE_ENV, SOURCE_ENV)}
    procs = {}
    for name in ("first", "second"):
        args = run_command(
            config,
            folder / f"cache-{name}",
            "--suite",
            "smoke",
            "--frameworks",
            "torch",
            "--seeds",
            "2",
            "--threads",
            "1",
            "--out",
            str(folder / name),
            source=openml_source,
        )
        procs[name] = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for proc in procs.values():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    return folder / "first", folder / "second"


@pytest.mark.slow
def test_two_smoke_runs_with_the_same_seeds_compare_clean(smoke_runs, tmp_path) -> None:
    first, second = smoke_runs
    md = tmp_path / "compare.md"
    result = distillbench("compare", str(first), str(second), "--fail-on", "quality", "--md", str(md))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    comparison = compare_runs(first, second)
    quality = [r for r in comparison.rows if r.kind == "quality"]
    # iris and boston, torch, 3 roles and the 2 references: every metric of every role is compared
    assert {(r.dataset, r.role) for r in quality} == {
        (d, role) for d in ("iris", "boston") for role in ROLES + REFERENCES
    }
    assert all(r.verdict == UNCHANGED for r in quality), [r for r in quality if r.verdict != UNCHANGED]
    assert comparison.jobs == [] and comparison.machine_differences == [] and comparison.flags == []
    # same seeds, deterministic training: the same numbers
    assert all(r.change == 0 for r in quality)
    assert "| boston | torch | student_kd | rmse |" in md.read_text()


@pytest.mark.slow
def test_history_of_real_runs(smoke_runs, tmp_path) -> None:
    result = distillbench(
        "history",
        *map(str, smoke_runs),
        "--metric",
        "primary",
        "--metric",
        "train_seconds",
        "--out",
        str(tmp_path / "history"),
    )
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "history" / "history.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 * (3 + 2) * 2  # header + runs x datasets x roles (and references) x metrics
    assert (tmp_path / "history" / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
