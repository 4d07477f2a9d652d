"""Stage 2, defined once for both frameworks: turn the teacher's outputs into the student's targets.

The teacher's outputs leave the framework as numpy arrays (logits for classification, standardised
values for regression), so every compressor is plain numpy and both implementations train their
students on exactly the same targets.

Each compressor is one class registered here by task and name (``register_compressor``), with the
config fields only it uses; ``[distill] classification_compressor`` / ``regression_compressor``
name one. Classification (input: logits of shape (n, C); output: probabilities of shape (n, C)
summing to 1): ``temperature``, ``topk``, ``quantize``. Regression (input: shape (n,); output:
shape (n,)): ``identity``, ``affine``, ``quantize``. Each class's docstring says what it computes.
A classification objective with targets of its own (``objectives.py``: ``logit_matching``,
``hard_labels``) replaces the compressor with one of ``OWN_TARGETS``, which no config names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from distillbench.implementations.objectives import OBJECTIVES
from distillbench.implementations.registry import ConfigField, Registry, is_int, merge_fields

if TYPE_CHECKING:
    from distillbench.implementations.spec import DistillSpec


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    k = min(k, probs.shape[1])
    drop = np.argsort(-probs, axis=1, kind="stable")[:, k:]
    kept = probs.copy()
    np.put_along_axis(kept, drop, 0.0, axis=1)
    return kept / kept.sum(axis=1, keepdims=True)


def quantize_probs(probs: np.ndarray, bits: int) -> np.ndarray:
    levels = 2**bits - 1
    scaled = probs * levels
    counts = np.floor(scaled).astype(np.int64)
    short = levels - counts.sum(axis=1)  # units still to hand out in each row
    order = np.argsort(-(scaled - counts), axis=1, kind="stable")
    bump = np.arange(probs.shape[1])[None, :] < short[:, None]
    np.put_along_axis(counts, order, np.take_along_axis(counts, order, axis=1) + bump, axis=1)
    return counts / levels


@dataclass(frozen=True)
class Compressor:
    """A fitted compressor: ``apply`` maps teacher outputs to student targets (float32). Its fields
    are the fitted parameters, recorded as they are (``asdict``) in the distilled student's record;
    a compressor sets those it uses (one that needs others adds them in its subclass)."""

    task: str
    kind: str
    temperature: float = 1.0
    k: int = 0
    bits: int = 0
    scale: float = 1.0  # affine: a
    offset: float = 0.0  # affine: b
    low: float = 0.0  # regression quantize: the grid
    high: float = 0.0

    TASK: ClassVar[str]  # the registration: task and name (= kind)
    NAME: ClassVar[str]
    FIELDS: ClassVar[dict[str, ConfigField]]  # the [distill] fields only compressors use

    @classmethod
    def fit(cls, spec: DistillSpec, teacher_train_outputs: np.ndarray, y_train: np.ndarray) -> Compressor:
        """Fitted on the training split's teacher outputs (and labels)."""
        return cls(cls.TASK, cls.NAME)

    def compress(self, t: np.ndarray) -> np.ndarray:
        """The targets of teacher outputs ``t`` (float64)."""
        raise NotImplementedError

    def apply(self, teacher_outputs: np.ndarray) -> np.ndarray:
        return self.compress(np.asarray(teacher_outputs, dtype=np.float64)).astype(np.float32)


# task -> name -> the compressor's class
COMPRESSORS: dict[str, Registry[type[Compressor]]] = {
    "classification": Registry("compressor"),
    "regression": Registry("compressor"),
}


def register_compressor(task: str, name: str, **fields: ConfigField):
    """Class decorator: the compressor ``name`` of ``task``, with the config fields only compressors
    use (``[distill]``; shared by two compressors when both declare the same ``ConfigField``)."""

    def register(cls: type[Compressor]) -> type[Compressor]:
        cls.TASK, cls.NAME, cls.FIELDS = task, name, fields
        return COMPRESSORS[task].add(name, cls)

    return register


def compressor_fields() -> dict[str, ConfigField]:
    """Every field the compressors declare, once each, in registration order."""
    return merge_fields(
        {
            f"{task} compressor {name!r}": cls.FIELDS
            for task, registry in COMPRESSORS.items()
            for name, cls in registry.items()
        }
    )


def fit_compressor(task: str, spec: DistillSpec, teacher_train_outputs: np.ndarray, y_train: np.ndarray) -> Compressor:
    """Fit stage 2 on the training split's teacher outputs (and labels, for ``affine``): the
    configured compressor, or on classification the objective's own targets."""
    own = OBJECTIVES[spec.objective].targets if task == "classification" else None
    if own:
        return OWN_TARGETS[own].fit(spec, teacher_train_outputs, y_train)
    name = spec.classification_compressor if task == "classification" else spec.regression_compressor
    return COMPRESSORS[task][name].fit(spec, teacher_train_outputs, y_train)


BITS = ConfigField(4, lambda v: is_int(v) and 1 <= v <= 16, "an integer in [1, 16]")


# --- classification ------------------------------------------------------------------------------


class _Softmax(Compressor):
    """softmax(z / T). Its record holds every classification setting (T, k, bits), whichever
    compressor uses them."""

    @classmethod
    def fit(cls, spec: DistillSpec, teacher_train_outputs: np.ndarray, y_train: np.ndarray) -> Compressor:
        return cls(cls.TASK, cls.NAME, temperature=spec.temperature, k=spec.topk, bits=spec.bits)

    def compress(self, t: np.ndarray) -> np.ndarray:
        return softmax(t, self.temperature)


@register_compressor("classification", "temperature")
class Temperature(_Softmax):
    """softmax(z / T) (Hinton et al. 2015)."""


@register_compressor("classification", "topk", topk=ConfigField(3, lambda v: is_int(v) and v >= 1, "an integer >= 1"))
class TopK(_Softmax):
    """softmax(z / T), all but the k largest (``topk``) set to 0, renormalised."""

    def compress(self, t: np.ndarray) -> np.ndarray:
        return top_k(softmax(t, self.temperature), self.k)


@register_compressor("classification", "quantize", bits=BITS)
class QuantizeProbabilities(_Softmax):
    """softmax(z / T) on a grid of 2^b levels {0, 1/L, ..., 1} with L = 2^b - 1 (b: ``bits``), rounded
    by largest remainder so that each row still sums to exactly 1."""

    def compress(self, t: np.ndarray) -> np.ndarray:
        return quantize_probs(softmax(t, self.temperature), self.bits)


# --- regression ----------------------------------------------------------------------------------


@register_compressor("regression", "identity")
class Identity(Compressor):
    """The teacher's outputs as they are."""

    def compress(self, t: np.ndarray) -> np.ndarray:
        return t


@register_compressor("regression", "affine")
class Affine(Compressor):
    """``a * t + b``, a one-in/one-out linear layer fitted to map the teacher's outputs onto the
    training labels, as in the source design. It is fitted by ordinary least squares, the exact
    minimiser of the MSE that the source trains its Dense(1) with, so both frameworks get the same map."""

    @classmethod
    def fit(cls, spec: DistillSpec, teacher_train_outputs: np.ndarray, y_train: np.ndarray) -> Compressor:
        t = np.asarray(teacher_train_outputs, dtype=np.float64)
        design = np.column_stack([t, np.ones_like(t)])
        (scale, offset), *_ = np.linalg.lstsq(design, np.asarray(y_train, dtype=np.float64), rcond=None)
        return cls(cls.TASK, cls.NAME, scale=float(scale), offset=float(offset))

    def compress(self, t: np.ndarray) -> np.ndarray:
        return self.scale * t + self.offset


@register_compressor("regression", "quantize", bits=BITS)
class QuantizeValues(Compressor):
    """The outputs snapped to 2^b evenly spaced levels (b: ``bits``) between the smallest and largest
    teacher output on the training split (values outside are clipped)."""

    @classmethod
    def fit(cls, spec: DistillSpec, teacher_train_outputs: np.ndarray, y_train: np.ndarray) -> Compressor:
        t = np.asarray(teacher_train_outputs, dtype=np.float64)
        return cls(cls.TASK, cls.NAME, bits=spec.bits, low=float(t.min()), high=float(t.max()))

    def compress(self, t: np.ndarray) -> np.ndarray:
        steps = 2**self.bits - 1
        width = (self.high - self.low) or 1.0
        return self.low + np.round((np.clip(t, self.low, self.high) - self.low) / width * steps) / steps * width


# --- the objectives' own targets (objectives.py), in place of a classification compressor ---------


class Logits(Compressor):
    """``logit_matching``: the teacher's logits as they are."""

    TASK, NAME = "classification", "logits"

    def compress(self, t: np.ndarray) -> np.ndarray:
        return t


class Argmax(Compressor):
    """``hard_labels``: the one-hot row of the teacher's most likely class (ties: the first)."""

    TASK, NAME = "classification", "argmax"

    def compress(self, t: np.ndarray) -> np.ndarray:
        return (np.arange(t.shape[1]) == t.argmax(axis=1)[:, None]).astype(np.float64)


OWN_TARGETS: dict[str, type[Compressor]] = {"logits": Logits, "argmax": Argmax}
