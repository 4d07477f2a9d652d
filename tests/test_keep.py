"""Keeping what a run made (issue 16, point 5): `run --save-models` writes every model in its own and
its deployment formats with a model card, `--save-predictions` every model's test predictions.

The slow tests make three real tiny runs on iris (the tiny config of tests/test_faults.py, one
seed): torch with a sweep of two configurations (the second reuses the first's teacher and scratch
student), TensorFlow, and torch without the flags; each saved model is loaded back by its own
library and must predict what its record measured.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, iris_run_command
from distillbench.benchmarks.running.job import Job
from distillbench.benchmarks.running.keep import clear, name
from distillbench.datasets.prepare import get_prepared
from distillbench.files import replaced_folder_atomically
from distillbench.implementations.compressors import softmax
from distillbench.implementations.pipeline import initial_weights
from distillbench.implementations.roles import REFERENCES, ROLES, split_role
from distillbench.implementations.spec import spec_from_dict
from test_faults import distillbench, lines, manifest, one_clean_line

SWEEP = TINY + "[sweep]\n" + '"distill.temperature" = [2.0, 4.0]\n'


@pytest.fixture(scope="module")
def runs(openml_source, openml_cache, tmp_path_factory) -> SimpleNamespace:
    """`runs.run(out, config, *args)`: the arguments of a tiny run of iris, one seed, ONNX and int8 on."""
    folder = tmp_path_factory.mktemp("keep")
    configs = {"tiny": folder / "tiny.toml", "sweep": folder / "sweep.toml"}
    configs["tiny"].write_text(TINY)
    configs["sweep"].write_text(SWEEP)

    def run(out: Path, config: str, *args: str) -> list[str]:
        return iris_run_command(
            configs[config], openml_cache.root, out, "--threads", "1", *args, source=openml_source, deploy=True
        )

    return SimpleNamespace(run=run, folder=folder, test=get_prepared(61, 0, cache=openml_cache))


def finished_run(runs, name: str, config: str, *args: str) -> Path:
    out = runs.folder / name
    result = distillbench(runs.run(out, config, *args))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def torch_sweep(runs) -> Path:
    return finished_run(runs, "torch", "sweep", "--frameworks", "torch", "--save-models", "--save-predictions")


@pytest.fixture(scope="module")
def tensorflow_run(runs) -> Path:
    return finished_run(runs, "tf", "tiny", "--frameworks", "tensorflow", "--save-models", "--save-predictions")


def ok_records(out: Path) -> dict[tuple, dict]:
    """The run's ok records by (folder name, role), as `keep` names them."""
    records = {}
    for r in lines(out):
        if r["status"] == "ok":
            fold = "" if r.get("fold") is None else f"-fold{r['fold']}"  # the documented folder name
            job = SimpleNamespace(name=f"{r['dataset_id']}-{r['seed']}{fold}-{r['framework']}")
            records[(name(job, r.get("variant")), r["role"])] = r
    return records


def card_of(out: Path, folder: str, role: str) -> tuple[dict, Path]:
    card = json.loads((out / "models" / folder / f"{role}.json").read_text())
    return card, out / "models" / folder / card["file"]


def accuracy(y: np.ndarray, outputs: np.ndarray) -> float:
    return float(np.mean(softmax(outputs).argmax(1) == y))


def assert_kept(out: Path, test) -> dict[tuple, dict]:
    """Every ok model has its file and card (checksum, size, its record's metrics), and a predictions
    column whose accuracy is its record's; the records by (folder, role)."""
    records = ok_records(out)
    assert records, "no ok record"
    for (folder, role), record in records.items():
        card, path = card_of(out, folder, role)
        data = path.read_bytes()
        assert card["sha256"] == hashlib.sha256(data).hexdigest() and card["bytes"] == len(data)
        assert card["bytes"] == record["model_bytes"], (folder, role)
        assert card["metrics"] == record["metrics"] and card["split_seed"] == 0 and card["role"] == role
        assert card["dataset"]["id"] == 61 and card["dataset"]["name"] == "iris"
        assert card["dataset"]["class_names"] == test.class_names and card["variant"] == record.get("variant")
        assert card["framework"] == record["framework"] and card["framework_version"] == record["framework_version"]
        frame = pd.read_parquet(out / "predictions" / f"{folder}.parquet")
        assert len(frame) == len(test.y_test) and list(frame["row"]) == list(range(len(test.y_test)))
        assert (frame["y_true"].to_numpy() == test.y_test).all()
        assert np.mean(frame[role] == frame["y_true"]) == pytest.approx(record["metrics"]["accuracy"], abs=1e-12)
        proba = frame[[f"{role}_proba_{k}" for k in range(test.n_classes)]].to_numpy()
        assert (proba.argmax(1) == frame[role]).all() and np.allclose(proba.sum(1), 1.0)
    assert {p.name for p in (out / "models").iterdir()} == {folder for folder, _ in records}  # nothing half-written
    return records


def onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def assert_reloads(out: Path, records: dict[tuple, dict], test, native) -> None:
    """Each native model (by ``native(card, path, x)``: its outputs), ONNX model and reference,
    loaded back by its own library, gives its record's accuracy and the kept predictions."""
    checked = set()
    for (folder, role), record in records.items():
        card, path = card_of(out, folder, role)
        if path.suffix == ".joblib":
            import joblib

            predicted = joblib.load(path).predict(test.x_test)
        elif path.suffix == ".onnx":
            predicted = softmax(onnx_outputs(path, test.x_test)).argmax(1)
        elif record.get("format") is None:
            predicted = softmax(native(card, path, test.x_test)).argmax(1)
        else:
            continue
        checked.add(path.suffix)
        frame = pd.read_parquet(out / "predictions" / f"{folder}.parquet")
        assert (predicted == frame[role].to_numpy()).all(), (folder, role)
        assert np.mean(predicted == test.y_test) == pytest.approx(record["metrics"]["accuracy"], abs=1e-12)
    assert {".joblib", ".onnx"} < checked


def torch_outputs(card: dict, path: Path, x: np.ndarray) -> np.ndarray:
    """The torch model of a card, rebuilt from its config and loaded from its state_dict, on ``x``."""
    import torch

    from distillbench.implementations.torch_backend import TorchBackend

    spec, role = spec_from_dict(card["config"]), split_role(card["role"])[0]
    mlp = spec.teacher if role == "teacher" else spec.student
    n_in, n_out = len(card["dataset"]["features"]), len(card["dataset"]["class_names"])
    backend = TorchBackend()
    model = backend.build(mlp, initial_weights(mlp, n_in, n_out, 0, role))
    model.load_state_dict(torch.load(path))
    return backend.predict(model, x)


@pytest.mark.slow
def test_save_models_keeps_every_torch_model_of_every_configuration(torch_sweep, runs) -> None:
    test = runs.test
    records = assert_kept(torch_sweep, test)
    folders = {folder for folder, _ in records}
    assert folders == {"61-0-reference", "61-0-torch-temperature=2", "61-0-torch-temperature=4"}
    expected = {f"{role}{end}" for role in ROLES for end in (".pt", ".json", "_onnx.onnx", "_onnx.json")}
    expected |= {f"{role}_int8{end}" for role in ROLES for end in (".pt", ".json")}
    for folder in folders - {"61-0-reference"}:
        assert {p.name for p in (torch_sweep / "models" / folder).iterdir()} == expected
    assert {p.name for p in (torch_sweep / "models" / "61-0-reference").iterdir()} == {
        f"{role}{end}" for role in REFERENCES for end in (".joblib", ".json")
    }
    # the second configuration reused the first's teacher: the same model, kept in both folders
    reused, _ = card_of(torch_sweep, "61-0-torch-temperature=4", "teacher")
    assert reused["reused_from"] == "temperature=2"
    assert reused["sha256"] == card_of(torch_sweep, "61-0-torch-temperature=2", "teacher")[0]["sha256"]
    assert card_of(torch_sweep, "61-0-torch-temperature=4", "student_kd")[0]["config"]["distill"]["temperature"] == 4
    assert_reloads(torch_sweep, records, test, torch_outputs)
    m = manifest(torch_sweep)
    assert m["save_models"] is True and m["save_predictions"] is True


@pytest.mark.slow
def test_save_models_keeps_keras_and_tflite_models(tensorflow_run, runs) -> None:
    import keras

    from distillbench.implementations import deploy

    test = runs.test
    records = assert_kept(tensorflow_run, test)
    assert_reloads(tensorflow_run, records, test, lambda card, path, x: keras.models.load_model(path)(x).numpy())
    for role in ROLES:
        path = card_of(tensorflow_run, "61-0-tensorflow", f"{role}_int8")[1]
        assert path.suffix == ".tflite"
        served = deploy.tflite_served(path.read_bytes(), 1, "", None, None)
        predicted = softmax(served.fn(np.ascontiguousarray(test.x_test, dtype=np.float32))).argmax(1)
        frame = pd.read_parquet(tensorflow_run / "predictions" / "61-0-tensorflow.parquet")
        assert (predicted == frame[f"{role}_int8"].to_numpy()).all()


@pytest.mark.slow
def test_without_the_flags_nothing_is_kept_and_resume_keeps_the_plan(torch_sweep, runs) -> None:
    plain = finished_run(runs, "plain", "tiny", "--frameworks", "torch", "--no-deploy")
    assert not (plain / "models").exists() and not (plain / "predictions").exists()
    m = manifest(plain)
    assert m["save_models"] is False and m["save_predictions"] is False
    for out, config, args, what in (
        (plain, "tiny", ("--frameworks", "torch", "--no-deploy", "--save-models"), "save_models on, not off"),
        (torch_sweep, "sweep", ("--frameworks", "torch", "--save-models"), "save_predictions off, not on"),
    ):
        before = (out / "records.jsonl").read_bytes()
        result = distillbench(runs.run(out, config, "--resume", *args))
        one_clean_line(result.returncode, result.stderr, 2, rf"distillbench: error: --resume .*{what}")
        assert (out / "records.jsonl").read_bytes() == before
    assert not (plain / "models").exists()


# ---- fast: the folder written whole, an earlier attempt's files cleared


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path) -> None:
    target = tmp_path / "models" / "61-0-torch"
    target.mkdir(parents=True)
    (target / "old.pt").write_text("old")
    with pytest.raises(RuntimeError), replaced_folder_atomically(target) as partial:
        (partial / "new.pt").write_text("half")
        raise RuntimeError("killed mid-way")
    assert [p.name for p in target.iterdir()] == ["old.pt"] and os.listdir(tmp_path / "models") == ["61-0-torch"]
    with replaced_folder_atomically(target) as partial:
        (partial / "new.pt").write_text("new")
        assert not (target / "new.pt").exists()
    assert [p.name for p in target.iterdir()] == ["new.pt"] and os.listdir(tmp_path / "models") == ["61-0-torch"]


def test_a_job_clears_what_an_earlier_attempt_of_it_left_only(tmp_path) -> None:
    models, predictions = tmp_path / "models", tmp_path / "predictions"
    job = Job(61, 1, "torch", {}, models=str(models), predictions=str(predictions))
    assert (
        name(job, None) == "61-1-torch"
        and name(job, "temperature=2, alpha=[0.3]") == "61-1-torch-temperature=2_alpha=_0.3"
    )
    mine = ["61-1-torch", "61-1-torch-t=2", ".61-1-torch.123.partial"]
    others = ["61-10-torch", "61-1-tensorflow", "161-1-torch", "61-1-reference"]
    for folder in mine + others:
        (models / folder).mkdir(parents=True)
    predictions.mkdir()
    for file in (
        "61-1-torch.parquet",
        "61-1-torch-t=2.parquet",
        ".61-1-torch.parquet.9.partial",
        "61-10-torch.parquet",
    ):
        (predictions / file).write_text("x")
    clear(job)
    assert sorted(p.name for p in models.iterdir()) == sorted(others)
    assert [p.name for p in predictions.iterdir()] == ["61-10-torch.parquet"]
