"""The framework-neutral pipeline spec: presets, TOML files and validation errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from distillbench.errors import UserError
from distillbench.implementations.pipeline import initial_weights
from distillbench.implementations.spec import (
    ConfigError,
    DistillSpec,
    MLPSpec,
    PipelineSpec,
    TrainingSpec,
    TransferSpec,
    load_spec,
    presets,
    spec_from_dict,
)

DISTILLBENCH = Path(sys.executable).with_name("distillbench")


def to_toml(data: dict) -> str:
    """A minimal TOML writer for a spec's dict (str, bool, int, float, list of int, one level of tables)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(item) for item in v) + "]"
        return repr(v)

    lines = [f"{key} = {value(v)}" for key, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{section}]"] + [f"{key} = {value(v)}" for key, v in table.items()]
    return "\n".join(lines) + "\n"


# (config, the field the error must name)
INVALID = [
    ({"teacher": {"widths": [64, -3]}}, "teacher.widths[1]"),
    ({"student": {"widths": [0]}}, "student.widths[0]"),
    ({"student": {"widths": [True]}}, "student.widths[0]"),
    ({"student": {"widths": [1.5]}}, "student.widths[0]"),
    ({"teacher": {"widths": 64}}, "teacher.widths"),
    ({"teacher": {"activation": "gelu"}}, "teacher.activation"),
    ({"teacher": {"dropout": 1.0}}, "teacher.dropout"),
    ({"teacher": {"dropout": -0.1}}, "teacher.dropout"),
    ({"distill": {"classification_compressor": "zip"}}, "distill.classification_compressor"),
    ({"distill": {"regression_compressor": "temperature"}}, "distill.regression_compressor"),
    ({"distill": {"temperature": 0.0}}, "distill.temperature"),
    ({"distill": {"temperature": -2.0}}, "distill.temperature"),
    ({"distill": {"temperature": math.nan}}, "distill.temperature"),
    ({"distill": {"alpha": -0.1}}, "distill.alpha"),
    ({"distill": {"alpha": 1.5}}, "distill.alpha"),
    ({"distill": {"alpha": math.nan}}, "distill.alpha"),
    ({"distill": {"alpha": True}}, "distill.alpha"),
    ({"distill": {"temperature": "4"}}, "distill.temperature"),
    ({"distill": {"t_squared": 1}}, "distill.t_squared"),
    ({"distill": {"topk": 0}}, "distill.topk"),
    ({"distill": {"bits": 0}}, "distill.bits"),
    ({"distill": {"bits": 17}}, "distill.bits"),
    ({"training": {"epochs": "ten"}}, "training.epochs"),
    ({"training": {"epochs": 1.5}}, "training.epochs"),
    ({"training": {"epochs": 0}}, "training.epochs"),
    ({"training": {"batch_size": 0}}, "training.batch_size"),
    ({"training": {"patience": -1}}, "training.patience"),
    ({"training": {"learning_rate": 0.0}}, "training.learning_rate"),
    ({"training": {"beta_2": 1.0}}, "training.beta_2"),
    ({"training": {"epsilon": 0.0}}, "training.epsilon"),
    ({"distill": {"objective": "kl"}}, "distill.objective"),
    (
        {"distill": {"objective": "logit_matching", "classification_compressor": "topk"}},
        "distill.classification_compressor",
    ),
    (
        {"distill": {"objective": "hard_labels", "classification_compressor": "quantize"}},
        "distill.classification_compressor",
    ),
    ({"transfer": {"kind": "smote"}}, "transfer.kind"),
    ({"transfer": {"kind": "munge", "size": -1}}, "transfer.size"),
    ({"transfer": {"kind": "munge", "size": 1000}}, "transfer.size"),
    ({"transfer": {"kind": "munge", "size": math.nan}}, "transfer.size"),
    ({"transfer": {"kind": "munge", "p": 1.5}}, "transfer.p"),
    ({"transfer": {"kind": "munge", "s": 0}}, "transfer.s"),
    ({"transfer": {"kind": "mixup", "mixup_alpha": 0}}, "transfer.mixup_alpha"),
    ({"transfer": {"kind": "gaussian", "noise_sd": -0.1}}, "transfer.noise_sd"),
    ({"transfer": {"kind": "unlabeled", "labelled_fraction": 1.0}}, "transfer.labelled_fraction"),
    ({"transfer": {"kind": "unlabeled", "labelled_fraction": 0}}, "transfer.labelled_fraction"),
    ({"transfer": {"kind": "mixup", "p": 0.3}}, "transfer.p"),
    ({"transfer": {"kind": "unlabeled", "size": 4}}, "transfer.size"),
    ({"transfer": {"size": 4}}, "transfer.size"),
    ({"transfer": {"kind": "munge", "labelled_fraction": 0.5}}, "transfer.labelled_fraction"),
    ({"transfer": {"kind": 3}}, "transfer.kind"),
    ({"training": {"max_steps": 0}}, "training.max_steps"),
    ({"training": {"max_steps": 1.5}}, "training.max_steps"),
    ({"training": {"eval_steps": 0}}, "training.eval_steps"),
    ({"training": {"min_delta": 1.0}}, "training.min_delta"),
    ({"training": {"min_delta": -0.1}}, "training.min_delta"),
    ({"training": {"time_limit": -1.0}}, "training.time_limit"),
    ({"training": {"time_limit": math.inf}}, "training.time_limit"),
    ({"training": {"lr_schedule": "cosine"}}, "training.lr_schedule"),
    ({"training": {"lr_schedule": "plateau", "lr_factor": 1.0}}, "training.lr_factor"),
    ({"training": {"lr_schedule": "plateau", "lr_factor": 0.0}}, "training.lr_factor"),
    ({"training": {"lr_schedule": "plateau", "lr_patience": 0}}, "training.lr_patience"),
    ({"training": {"lr_schedule": "plateau", "min_learning_rate": 0.0}}, "training.min_learning_rate"),
    ({"training": {"lr_schedule": "plateau", "min_learning_rate": 0.1}}, "training.min_learning_rate"),
    ({"training": {"lr_schedule": "constant", "lr_factor": 0.5}}, "training.lr_factor"),
    ({"teacher": {"depth": 3}}, "teacher.depth"),
    ({"optimizer": {"name": "sgd"}}, "optimizer"),
    ({"teacher": "big"}, "teacher"),
    ({"name": 5}, "name"),
]


def _ids(cases):
    return [f"{field}-{i}" for i, (_, field) in enumerate(cases)]


@pytest.mark.parametrize(("data", "field"), INVALID, ids=_ids(INVALID))
def test_invalid_config_is_refused_naming_the_field(data, field):
    with pytest.raises(ConfigError) as info:
        spec_from_dict(data)
    message = str(info.value)
    assert message.startswith(f"{field}:"), message
    assert "\n" not in message
    assert isinstance(info.value, UserError)


@pytest.mark.parametrize(("data", "field"), INVALID, ids=_ids(INVALID))
def test_invalid_toml_file_is_refused_naming_file_and_field(tmp_path, data, field):
    path = tmp_path / "bad.toml"
    path.write_text(to_toml(data))
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: {field}:"), str(info.value)


def test_invalid_toml_syntax_is_a_config_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[teacher]\nwidths = [64, 32\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_spec(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\N{LATIN SMALL LETTER E WITH ACUTE}"\n'.encode("latin-1"))
    with pytest.raises(
        ConfigError, match=r"not UTF-8 text, as TOML must be \(invalid continuation byte at byte 11\)$"
    ) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("name", ["nope", "missing.toml"])
def test_unknown_preset_or_missing_file_is_a_config_error(name):
    with pytest.raises(ConfigError) as info:
        load_spec(name)
    message = str(info.value)
    assert name in message
    assert "default" in message and "seed" in message  # the presets are listed


def test_presets_default_and_seed_load():
    assert {"default", "seed"} <= set(presets())
    for name in ("default", "seed"):
        assert load_spec(name).name == name


def test_default_preset_is_the_code_default():
    assert load_spec("default") == PipelineSpec()
    assert load_spec(None) == PipelineSpec()


def test_seed_preset_is_the_source_design_example():
    spec = load_spec("seed")
    assert spec.teacher.widths == [128, 64]
    assert spec.teacher.activation == "relu"
    assert spec.student.widths == []  # linear: Dense(1)
    assert spec.distill.regression_compressor == "affine"
    # Dense(128, relu) -> Dense(64, relu) -> Dense(1) on 100 features; the student is Dense(1).
    teacher = initial_weights(spec.teacher, 100, 1, seed=0, role="teacher")
    student = initial_weights(spec.student, 100, 1, seed=0, role="student_kd")
    assert [w.shape for w in teacher] == [(100, 128), (128,), (128, 64), (64,), (64, 1), (1,)]
    assert [w.shape for w in student] == [(100, 1), (1,)]


def test_toml_file_round_trip(tmp_path):
    spec = PipelineSpec(
        name="custom",
        teacher=MLPSpec(widths=[48, 24], activation="tanh", dropout=0.25),
        student=MLPSpec(widths=[], activation="linear", dropout=0.0),
        distill=DistillSpec(
            alpha=0.3,
            temperature=2.5,
            t_squared=False,
            classification_compressor="topk",
            regression_compressor="quantize",
            topk=2,
            bits=6,
        ),
        training=TrainingSpec(
            epochs=7,
            max_steps=50,
            batch_size=16,
            learning_rate=3e-4,
            beta_1=0.8,
            beta_2=0.99,
            epsilon=1e-8,
            eval_steps=3,
            patience=0,
            min_delta=1e-3,
            lr_schedule="plateau",
            lr_factor=0.2,
            lr_patience=2,
            min_learning_rate=1e-6,
            time_limit=30.0,
        ),
        transfer=TransferSpec(kind="munge", size=2.5, p=0.3, s=4.0),
    ).validate()
    assert spec != PipelineSpec()
    path = tmp_path / "custom.toml"
    path.write_text(to_toml(spec.to_dict()))
    assert load_spec(path) == spec
    assert spec_from_dict(spec.to_dict()) == spec


def test_partial_file_keeps_defaults_and_accepts_integer_floats(tmp_path):
    path = tmp_path / "partial.toml"
    path.write_text("[distill]\ntemperature = 2\n")
    spec = load_spec(path)
    assert spec.distill.temperature == 2.0 and isinstance(spec.distill.temperature, float)
    assert spec.replace(distill=DistillSpec(temperature=4.0)) == PipelineSpec()


def test_a_config_without_a_transfer_set_reads_as_before():
    assert "transfer" not in PipelineSpec().to_dict()
    spec = spec_from_dict(
        {"transfer": {"kind": "mixup", "mixup_alpha": 0.4}, "distill": {"objective": "logit_matching"}}
    )
    assert spec.to_dict()["transfer"]["kind"] == "mixup" and spec_from_dict(spec.to_dict()) == spec


def test_replace_validates():
    with pytest.raises(ConfigError, match=r"^distill\.alpha:"):
        PipelineSpec().replace(distill=DistillSpec(alpha=2.0))


def test_cli_bad_config_is_one_line_without_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[teacher]\nwidths = [128, -3]\n")
    proc = subprocess.run(
        [str(DISTILLBENCH), "parity", "--config", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("distillbench: error:")
    assert "teacher.widths[1]" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("command", "seed"), [("parity", "-1"), ("demo", str(2**32))])
def test_cli_refuses_an_out_of_range_seed_without_traceback(command, seed):
    # Keras accepts only 0 <= seed < 2^32; outside it the commands used to die with a traceback.
    proc = subprocess.run([str(DISTILLBENCH), command, "--seed", seed], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"argument --seed: expected a seed from 0 to 2^32 - 1, not '{seed}'" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr
