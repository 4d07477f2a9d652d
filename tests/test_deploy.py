"""Deployment formats (``Backend.deployments``): ONNX under onnxruntime and post-training int8, in
both frameworks, with the real converters; the check against the framework's own outputs; and a
real `distillbench run` of the smoke suite with its report's Deployment section."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import command, iris_job
from distillbench.benchmarks.store.run_folder import read_records
from distillbench.implementations.deploy import ONNX_TOLERANCE, ToleranceExceeded, check_tolerance
from distillbench.implementations.pipeline import Served, initial_weights
from distillbench.implementations.roles import REFERENCE, REFERENCES, ROLES
from distillbench.implementations.spec import MLPSpec, spec_from_dict
from test_harness import FRAMEWORKS, SMOKE, SMOKE_RUN, assert_ok, clean_env, distillbench_run, tiny_data

FORMATS = ("onnx", "int8")
DEPLOYED = tuple(f"{role}_{fmt}" for role in ROLES for fmt in FORMATS)
N_FEATURES = 20


def _served(fn, tolerance=None) -> Served:
    return Served(fn, "test", None, 0, tolerance=tolerance)


# ---- the check against the framework's outputs


def test_the_tolerance_is_relative_to_the_largest_output() -> None:
    reference = np.array([[1.0, -2.0], [0.5, 0.0]], dtype=np.float32)
    strict = _served(None, ONNX_TOLERANCE)
    assert check_tolerance(strict, reference, reference) == 0.0
    assert check_tolerance(strict, reference + 1.5 * ONNX_TOLERANCE, reference) == pytest.approx(
        1.5 * ONNX_TOLERANCE, rel=1e-3
    )
    with pytest.raises(ToleranceExceeded, match="exceeds the tolerance"):
        check_tolerance(strict, reference + 2.5 * ONNX_TOLERANCE, reference)  # bound: 1e-4 x max(1, 2)
    small = reference / 100  # outputs below 1: the bound is the tolerance itself
    with pytest.raises(ToleranceExceeded):
        check_tolerance(strict, small + 2 * ONNX_TOLERANCE, small)


def test_a_format_without_a_tolerance_only_reports_its_difference() -> None:
    reference = np.zeros((3, 1), dtype=np.float32)
    assert check_tolerance(_served(None), reference + 0.5, reference) == 0.5
    with pytest.raises(ToleranceExceeded, match="shape"):  # but a wrong shape or NaN is never a result
        check_tolerance(_served(None), np.zeros((3, 2), dtype=np.float32), reference)
    with pytest.raises(ToleranceExceeded, match="finite"):
        check_tolerance(_served(None), reference + np.nan, reference)


# ---- each framework's converters, on a small model


@pytest.fixture(scope="module", params=FRAMEWORKS)
def backend(request):
    from distillbench.implementations.frameworks import get_backend

    backend = get_backend(request.param)
    backend.configure(0, threads=1)
    return backend


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(4096, N_FEATURES)).astype(np.float32)


def _model(backend, n_outputs: int):
    spec = MLPSpec(widths=[64, 32], activation="relu", dropout=0.1)
    weights = initial_weights(spec, N_FEATURES, n_outputs, seed=3, role="teacher")
    rng = np.random.default_rng(1)
    weights = [w if w.ndim == 2 else rng.normal(scale=0.1, size=w.shape).astype(np.float32) for w in weights]
    return backend.build(spec, weights)


@pytest.mark.slow
@pytest.mark.parametrize("n_outputs", [3, 1], ids=["classification", "regression"])
def test_each_format_serves_the_model_at_batch_1_and_4096(backend, rows, n_outputs) -> None:
    model = _model(backend, n_outputs)
    reference = backend.predict(model, rows)
    float_bytes = backend.serve(model).model_bytes
    formats = backend.deployments(model, rows[:1000])
    assert set(formats) == set(FORMATS)

    onnx = formats["onnx"]()
    assert onnx.tolerance == ONNX_TOLERANCE and "onnxruntime" in onnx.path and onnx.model_bytes > 0
    assert onnx.n_params == backend.n_params(model)
    diff = check_tolerance(onnx, onnx.fn(rows), reference)  # raises beyond the tolerance
    assert diff < ONNX_TOLERANCE / 10  # float32 rounding only: far inside it
    for i in range(3):  # single rows, as the latency is measured
        check_tolerance(onnx, onnx.fn(rows[i : i + 1]), reference[i : i + 1])

    int8 = formats["int8"]()
    assert int8.tolerance is None and "int8" in int8.path
    assert int8.model_bytes < float_bytes, (int8.model_bytes, float_bytes)
    out = int8.fn(rows)
    assert out.shape == reference.shape and np.all(np.isfinite(out))
    assert check_tolerance(int8, out, reference) > 0  # quantised: not the same numbers ...
    scale = np.max(np.abs(reference))
    # ... but close to them (static int8 may clip a rare row outside the calibrated range)
    assert np.quantile(np.abs(out - reference), 0.99) < 0.1 * scale
    if n_outputs > 1:
        assert np.mean(out.argmax(1) == reference.argmax(1)) > 0.9
    single = np.concatenate([int8.fn(rows[i : i + 1]) for i in range(3)])  # batch 1 after 4096 (TFLite resizes)
    assert single.shape == (3, n_outputs) and np.all(np.isfinite(single))
    assert np.array_equal(int8.fn(rows), out)  # and back: the same numbers


@pytest.mark.slow
def test_importing_the_backends_does_not_import_the_converters() -> None:
    code = (
        "import sys; import distillbench.implementations.torch_backend, distillbench.implementations.tf_backend; "
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'tf2onnx', 'onnxscript') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


# ---- a broken export in a real job: a failed record with its reason, never a number


@pytest.mark.slow
def test_an_export_off_by_more_than_its_tolerance_fails_its_record_only(
    openml_source, openml_cache, monkeypatch
) -> None:
    from distillbench.implementations.torch_backend import TorchBackend

    real = TorchBackend.deployments

    def deployments(self, model, x_calibration):
        formats = real(self, model, x_calibration)

        def shifted_onnx():
            served = formats["onnx"]()
            return Served(
                lambda x: served.fn(x) + 1e-2,
                served.path,
                served.n_params,
                served.model_bytes,
                served.macs_per_row,
                served.tolerance,
            )

        def broken():
            raise RuntimeError("converter crashed\nsecond line")

        return {"onnx": shifted_onnx, "int8": formats["int8"], "broken": broken}

    monkeypatch.setattr(TorchBackend, "deployments", deployments)
    spec = spec_from_dict({"teacher": {"widths": [8]}, "student": {"widths": [4]}, "training": {"epochs": 2}})
    records = {r["role"]: r for r in iris_job(spec, openml_source, openml_cache, deploy=True)}
    assert set(records) == set(ROLES) | {f"{role}_{fmt}" for role in ROLES for fmt in ("onnx", "int8", "broken")}
    for role in ROLES:
        assert records[role]["status"] == "ok"
        assert records[f"{role}_int8"]["status"] == "ok" and records[f"{role}_int8"]["max_abs_diff"] > 0
        onnx = records[f"{role}_onnx"]
        assert onnx["status"] == "failed" and onnx["error"].startswith(
            "ToleranceExceeded: max |output - framework output|"
        )
        assert onnx["metrics"] is None and onnx["latency_p50_us"] is None and onnx["model_bytes"] is None
        assert onnx["model_role"] == role and onnx["format"] == "onnx"
        assert records[f"{role}_broken"]["status"] == "failed"
        assert records[f"{role}_broken"]["error"] == "RuntimeError: converter crashed"


# ---- a real run of the smoke suite, its report, and compare


@pytest.fixture(scope="module")
def smoke_run(openml_source, openml_cache, tmp_path_factory) -> SimpleNamespace:
    cwd = tmp_path_factory.mktemp("deploy")
    out = cwd / "run"
    data = tiny_data(openml_source, openml_cache, cwd)
    run = distillbench_run(data, *SMOKE_RUN, "--out", str(out), cwd=cwd, timeout=600, deploy=True)
    assert_ok(run)
    report = subprocess.run(
        command("report", str(out), "--out", str(cwd / "report")),
        cwd=cwd,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert_ok(report)
    return SimpleNamespace(cwd=cwd, out=out, result=run, records=read_records(out), report=cwd / "report")


@pytest.mark.slow
def test_a_run_measures_every_model_in_every_format(smoke_run) -> None:
    records = smoke_run.records
    assert sorted((r["dataset_id"], r["framework"], r["role"]) for r in records) == sorted(
        [(d, f, role) for d in SMOKE for f in FRAMEWORKS for role in (*ROLES, *DEPLOYED)]
        + [(d, REFERENCE, role) for d in SMOKE for role in REFERENCES]
    )  # the references: no deployment formats
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records if r["status"] != "ok"]
    floats = {(r["dataset_id"], r["framework"], r["role"]): r for r in records if r["role"] in ROLES}
    for r in records:
        if r["role"] in ROLES + REFERENCES:
            assert r.get("format") is None
            continue
        model = floats[(r["dataset_id"], r["framework"], r["model_role"])]
        assert r["role"] == f"{r['model_role']}_{r['format']}" and r["format"] in FORMATS
        assert r["convert_seconds"] > 0 and r["latency_p50_us"] > 0 and r["throughput_rows_per_s"] > 0
        assert r["model_bytes"] > 0 and r["n_params"] == model["n_params"] and r["retention"] is not None
        assert (r["agreement"] is not None) == (r["task"] == "classification")
        if r["format"] == "onnx":  # the same model: the same quality, within the tolerance of the outputs
            assert r["max_abs_diff"] <= ONNX_TOLERANCE and r["tolerance"] == ONNX_TOLERANCE
            assert "onnxruntime" in r["call_path"]
            assert r["metrics"][r["primary_metric"]] == pytest.approx(model["metrics"][r["primary_metric"]], rel=1e-4)
        else:
            assert r["tolerance"] is None and "int8" in r["call_path"]


@pytest.mark.slow
def test_the_report_has_a_deployment_section(smoke_run) -> None:
    md = (smoke_run.report / "report.md").read_text()
    assert "## Deployment" in md and md.index("## Deployment") < md.index("## Failed jobs")
    assert "None: every planned job finished ok." in md
    for name in ("deployment", "deployment_summary"):
        assert (smoke_run.report / "tables" / f"{name}.csv").is_file()
    assert (smoke_run.report / "figures" / "deployment.png").is_file()
    assert not (smoke_run.report / "tables" / "deployment_failed.csv").exists()
    import csv

    with open(smoke_run.report / "tables" / "deployment.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(SMOKE) * len(FRAMEWORKS) * len(ROLES) * 3  # float32, onnx, int8
    assert {r["format"] for r in rows} == {"float32", "onnx", "int8"}
    html = (smoke_run.report / "report.html").read_text()
    assert 'id="table-deployment"' in html and 'id="figure-deployment"' in html


@pytest.mark.slow
def test_a_failed_format_is_reported_as_such_not_as_a_failed_job(smoke_run, tmp_path) -> None:
    from distillbench.benchmarks.reporting.report import write_report

    run = tmp_path / "run"
    shutil.copytree(smoke_run.out, run)
    lines = []
    for r in read_records(run):
        if r["role"] == "student_kd_onnx" and r["framework"] == "torch":
            r = {**r, "status": "failed", "error": "ToleranceExceeded: made by a test", "metrics": None}
        lines.append(json.dumps(r))
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")
    report = write_report(run, tmp_path / "report")
    md = (report / "report.md").read_text()
    failed_jobs = md[md.index("## Failed jobs") :]
    assert "None: every planned job finished ok." in failed_jobs  # the job itself finished
    assert "ToleranceExceeded: made by a test" in md[md.index("## Deployment") : md.index("## Failed jobs")]
    assert (report / "tables" / "deployment_failed.csv").is_file()
    assert "| 1/1 |" in md.split("## Deployment")[0]  # the results table counts the seed as ok


@pytest.mark.slow
def test_compare_with_a_run_without_deployments_reports_no_missing_jobs(smoke_run, tmp_path) -> None:
    from distillbench.benchmarks.tracking.compare import compare_runs

    candidate = tmp_path / "no-deploy"
    shutil.copytree(smoke_run.out, candidate)
    # as a --no-deploy run writes them: the model and reference roles only, each job writing as many records
    kept = [
        json.dumps(r | {"job_records": len(ROLES)} if r["role"] in ROLES else r)
        for r in read_records(candidate)
        if r["role"] in ROLES + REFERENCES
    ]
    (candidate / "records.jsonl").write_text("\n".join(kept) + "\n")
    manifest = json.loads((candidate / "manifest.json").read_text()) | {"deploy": False}
    (candidate / "manifest.json").write_text(json.dumps(manifest))
    comparison = compare_runs(smoke_run.out, candidate)
    assert not comparison.jobs, comparison.jobs
    assert any("deployment formats" in note for note in comparison.notes)
    both = compare_runs(smoke_run.out, smoke_run.out)  # two runs with them: their roles are compared too
    assert {row.role for row in both.rows} >= set(DEPLOYED)


@pytest.mark.slow
def test_the_summary_printed_by_run_counts_jobs_not_formats(smoke_run) -> None:
    table = [
        line.split() for line in smoke_run.result.stdout.splitlines() if line.split()[:1] in (["iris"], ["boston"])
    ]
    assert len(table) == len(SMOKE) * len(FRAMEWORKS) and all(row[-1] == "1/0" for row in table)
