"""What `run --save-models` and `--save-predictions` keep of a job: the models it made, each with
a model card, and their predictions on the test split (README, "Keeping the models").

The worker that ran the job writes them (it holds the models); the driver writes only the records
and the manifest. Per configuration of the job (one without a sweep), named
``<dataset>-<seed>[-fold<k>]-<framework>[-<configuration>]`` (``Job.name``):

- ``models/<name>/<role>.<ext>`` and ``<role>.json``: each model in its own format (a framework's
  native one, a deployment format's file, a scikit-learn estimator by joblib) and its card. The
  folder is filled beside its place and renamed into it when complete (``files.py``).
- ``predictions/<name>.parquet``: one row per test row, written atomically.

A job clears what an earlier attempt of it left (a failed or killed one) before it starts, so
what these folders hold is what the job's latest records describe.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillbench.files import replaced_atomically, replaced_folder_atomically
from distillbench.implementations.compressors import softmax
from distillbench.implementations.pipeline import Served

MODELS, PREDICTIONS = "models", "predictions"  # the folders in the run folder

# How to load each kind of file, as the card says it.
LOADING = {
    ".pt": "torch.load gives the model's state_dict: build the network of the card's config "
    "(distillbench's TorchBackend.build), then load_state_dict",
    ".keras": "keras.models.load_model",
    ".joblib": "joblib.load gives the fitted scikit-learn estimator",
    ".onnx": "onnxruntime.InferenceSession (input x: float32 rows, output: the raw outputs)",
    ".tflite": "tf.lite.Interpreter(model_path=...) (float32 rows in, raw outputs out)",
}
INT8_TORCH = (
    "torch.load gives the state_dict of the dynamically quantised network: build the float network of the "
    "card's config, torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8), then "
    "load_state_dict"
)
# Fields of a model's record that its card repeats beside its metrics.
CARD_FIELDS = (
    "model_role",
    "format",
    "call_path",
    "n_params",
    "model_bytes",
    "latency_p50_us",
    "throughput_rows_per_s",
    "epochs",
    "stop_reason",
    "max_abs_diff",
    "agreement",
    "flags",
    "reused_from",
)


@dataclass(frozen=True)
class Made:
    """A model a job made, as it is kept: its raw test outputs (logits (n, C) or standardised values
    (n, 1) or (n,)), and its file (the one its record's ``model_bytes`` measured), ending in ``suffix``."""

    outputs: np.ndarray
    file: bytes
    suffix: str

    @classmethod
    def of(cls, outputs: np.ndarray, served: Served) -> Made:
        assert served.file is not None, "a served model carries its file"
        return cls(outputs, served.file, served.suffix)


def wanted(job) -> bool:
    return bool(job.models or job.predictions)


def name(job, label: str | None) -> str:
    """The name of a job's configuration: ``Job.name``, and the configuration's label made safe for a
    file name (``temperature=2, alpha=0.3``: ``temperature=2_alpha=0.3``)."""
    base = job.name
    return base if label is None else f"{base}-{re.sub(r'[^A-Za-z0-9.=+-]+', '_', label).strip('_')}"


def clear(job) -> None:
    """Remove what an earlier attempt of this job kept, and what a killed one left half-written."""
    base = name(job, None)
    for folder in (job.models, job.predictions):
        if folder is None or not Path(folder).is_dir():
            continue
        for path in Path(folder).iterdir():
            stem = path.name.lstrip(".").removesuffix(".parquet")
            if stem == base or stem.startswith((base + "-", base + ".")):
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def keep(job, data, label: str | None, config: dict, records: dict[str, dict], made: dict[str, Made], version: str):
    """Write the models ``made`` of one configuration (by role, as ``records``) and their cards, and
    their test predictions, as the job asks."""
    kept = name(job, label)
    if job.models:
        with replaced_folder_atomically(Path(job.models) / kept) as folder:
            for role, model in made.items():
                path = folder / f"{role}{model.suffix}"
                path.write_bytes(model.file)
                card = _card(job, data, label, config, records[role], path, version)
                (folder / f"{role}.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    if job.predictions:
        Path(job.predictions).mkdir(parents=True, exist_ok=True)
        with replaced_atomically(Path(job.predictions) / f"{kept}.parquet") as partial_path:
            _predictions(job, data, label, made).to_parquet(partial_path, index=False)


def _card(job, data, label: str | None, config: dict, record: dict, path: Path, version: str) -> dict:
    file = path.read_bytes()
    int8_torch = record.get("format") == "int8" and path.suffix == ".pt"
    dataset = {
        "id": job.dataset_id,
        "name": data.name,
        "task": data.task,
        "target": data.target,
        "checksum": data.checksum,
        # The model's input: these columns, as distillbench prepares them (numeric standardised on
        # the training rows, categorical one-hot); the preparation itself is not saved.
        "features": data.feature_names,
    }
    if data.task == "classification":
        dataset["class_names"] = data.class_names  # output k is class_names[k]
    else:  # outputs are standardised: output * std + mean is in the target's units
        dataset["target_scaling"] = {"mean": data.y_mean, "std": data.y_std}
    return {
        "file": path.name,
        "bytes": len(file),
        "sha256": hashlib.sha256(file).hexdigest(),
        "loading": INT8_TORCH if int8_torch else LOADING[path.suffix],
        "role": record["role"],
        "run_id": Path(job.models).parent.name,
        "dataset": dataset,
        "split_seed": job.seed,
        **({} if job.folds is None else {"split_fold": job.fold, "split_folds": job.folds}),
        "framework": job.framework,
        "framework_version": version,
        "variant": label,
        "config": config,
        "primary_metric": record.get("primary_metric"),
        "metrics": record.get("metrics"),
        **{k: record[k] for k in CARD_FIELDS if record.get(k) is not None},
    }


def _predictions(job, data, label: str | None, made: dict[str, Made]):
    """One row per test row: ``row`` (its position in the test split), ``y_true`` and, per model,
    ``<role>`` (the predicted class index, or the value in the target's units) and, for
    classification, ``<role>_proba_<k>`` per class k. The schema's metadata names the classes."""
    import pandas as pd

    columns: dict[str, np.ndarray] = {"row": np.arange(len(data.y_test))}
    if data.task == "classification":
        columns["y_true"] = data.y_test
        for role, model in made.items():
            proba = softmax(np.asarray(model.outputs))
            columns[role] = proba.argmax(1)
            columns.update({f"{role}_proba_{k}": proba[:, k] for k in range(proba.shape[1])})
    else:
        columns["y_true"] = data.unstandardise(data.y_test)
        for role, model in made.items():
            columns[role] = data.unstandardise(np.asarray(model.outputs).reshape(len(data.y_test), -1)[:, 0])
    frame = pd.DataFrame(columns)
    frame.attrs["distillbench"] = {
        "dataset_id": job.dataset_id,
        "dataset_name": data.name,
        "split_seed": job.seed,
        **({} if job.folds is None else {"split_fold": job.fold, "split_folds": job.folds}),
        "framework": job.framework,
        "variant": label,
        "class_names": data.class_names if data.task == "classification" else None,
    }
    return frame
