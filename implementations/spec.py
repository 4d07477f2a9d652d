"""The framework-neutral pipeline spec: plain typed config shared by both implementations.

A config is a TOML file with the sections below; every field has a default, so a file only says
what it changes. Unknown sections or fields are refused, and so is every out-of-range value, with a
message naming the field (e.g. ``student.widths[0]: must be a positive integer, got -3``).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from distillbench.errors import UserError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")
CLASSIFICATION_COMPRESSORS = ("temperature", "topk", "quantize")
REGRESSION_COMPRESSORS = ("identity", "affine", "quantize")


class ConfigError(UserError):
    """A config value or file that cannot be used."""


@dataclass(frozen=True)
class MLPSpec:
    """A multilayer perceptron: Dense(width, activation) -> Dropout for each hidden width, then a
    linear output layer. ``widths = []`` is a linear model."""

    widths: list[int] = field(default_factory=lambda: [256, 256, 128])
    activation: str = "relu"
    dropout: float = 0.0

    def validate(self, where: str) -> None:
        for i, width in enumerate(self.widths):
            if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
                raise ConfigError(f"{where}.widths[{i}]: must be a positive integer, got {width!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"{where}.activation: must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}.dropout: must be in [0, 1), got {self.dropout!r}")


def _default_student() -> MLPSpec:
    return MLPSpec(widths=[32], dropout=0.0)


def _default_teacher() -> MLPSpec:
    return MLPSpec(widths=[256, 256, 128], dropout=0.1)


@dataclass(frozen=True)
class DistillSpec:
    """Stage 2 (compressor) and the student's loss.

    Classification: ``alpha * CE(y, s) + (1 - alpha) * T^2 * KL(q || softmax(s / T))`` where ``q`` is
    the compressed teacher distribution at temperature T. The T^2 factor (Hinton et al. 2015) keeps
    the soft-target gradients on the same scale as the hard-label ones as T changes; ``t_squared =
    false`` drops it. Binary tasks use two logits and a softmax, so the same formula applies.
    Regression: ``alpha * MSE(y, s) + (1 - alpha) * MSE(y_compressed, s)``.
    """

    alpha: float = 0.5
    temperature: float = 4.0
    t_squared: bool = True
    classification_compressor: str = "temperature"
    regression_compressor: str = "affine"
    topk: int = 3
    bits: int = 4

    def validate(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"distill.alpha: must be in [0, 1], got {self.alpha!r}")
        if not 0 < self.temperature < math.inf:
            raise ConfigError(f"distill.temperature: must be > 0 and finite, got {self.temperature!r}")
        if self.classification_compressor not in CLASSIFICATION_COMPRESSORS:
            raise ConfigError(
                f"distill.classification_compressor: unknown compressor {self.classification_compressor!r}"
                f" (known: {', '.join(CLASSIFICATION_COMPRESSORS)})"
            )
        if self.regression_compressor not in REGRESSION_COMPRESSORS:
            raise ConfigError(
                f"distill.regression_compressor: unknown compressor {self.regression_compressor!r}"
                f" (known: {', '.join(REGRESSION_COMPRESSORS)})"
            )
        if not isinstance(self.topk, int) or self.topk < 1:
            raise ConfigError(f"distill.topk: must be an integer >= 1, got {self.topk!r}")
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 16:
            raise ConfigError(f"distill.bits: must be an integer in [1, 16], got {self.bits!r}")


@dataclass(frozen=True)
class TrainingSpec:
    """Adam with every hyperparameter explicit (the frameworks' defaults differ, e.g. epsilon), a
    fixed epoch budget, early stopping on the validation loss with the best weights restored."""

    epochs: int = 100
    batch_size: int = 128
    learning_rate: float = 1e-3
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    patience: int = 10

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "patience" else 1):
                raise ConfigError(f"training.{name}: must be a {'non-negative' if name == 'patience' else 'positive'} integer, got {value!r}")
        if not 0 < self.learning_rate < math.inf:
            raise ConfigError(f"training.learning_rate: must be > 0 and finite, got {self.learning_rate!r}")
        for name in ("beta_1", "beta_2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"training.{name}: must be in [0, 1), got {getattr(self, name)!r}")
        if not 0 < self.epsilon < math.inf:
            raise ConfigError(f"training.epsilon: must be > 0 and finite, got {self.epsilon!r}")


@dataclass(frozen=True)
class PipelineSpec:
    """Teacher (stage 1), compressor and student loss (stage 2 and 3), training settings."""

    name: str = "default"
    teacher: MLPSpec = field(default_factory=_default_teacher)
    student: MLPSpec = field(default_factory=_default_student)
    distill: DistillSpec = field(default_factory=DistillSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)

    def validate(self) -> "PipelineSpec":
        self.teacher.validate("teacher")
        self.student.validate("student")
        self.distill.validate()
        self.training.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: Any) -> "PipelineSpec":
        """A copy with some sections replaced, e.g. ``spec.replace(training=...)``."""
        return dataclasses.replace(self, **sections).validate()


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a dict, refusing unknown fields and wrong types by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a table, got {data!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in known:
            raise ConfigError(f"{path}: unknown field (known: {', '.join(known)})")
        default = known[key].default_factory() if known[key].default_factory is not dataclasses.MISSING else known[key].default
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value, path)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: must be true or false, got {value!r}")
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(default, list):
            if not isinstance(value, list):
                raise ConfigError(f"{path}: must be a list, got {value!r}")
        elif not isinstance(value, type(default)) or isinstance(value, bool):
            raise ConfigError(f"{path}: must be of type {type(default).__name__}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def spec_from_dict(data: dict[str, Any]) -> PipelineSpec:
    return _build(PipelineSpec, data, "").validate()


def presets() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files(__package__).joinpath("presets").iterdir() if p.name.endswith(".toml"))


def load_spec(name_or_path: str | Path | None = None) -> PipelineSpec:
    """The spec from a TOML file path, or from a preset name (see ``presets()``); None is 'default'."""
    name_or_path = name_or_path or "default"
    path = Path(name_or_path)
    if path.suffix != ".toml" and str(name_or_path) in presets():
        text = resources.files(__package__).joinpath("presets", f"{name_or_path}.toml").read_text()
        source = f"preset {name_or_path!r}"
    elif path.is_file():
        text = path.read_text()
        source = str(path)
    else:
        raise ConfigError(f"{name_or_path}: no such config file or preset (presets: {', '.join(presets())})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return spec_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
