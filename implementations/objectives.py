"""The distilled student's objectives: how its loss uses the teacher's compressed targets ``t``.

A loss (``pipeline.LossSpec``) is ``alpha * label term + (1 - alpha) * scale * teacher term``, each
term the mean over the batch's rows of a value per row. The label term is the same for every
objective: cross-entropy of the student's logits ``s`` with the labels (classification), or the
squared error of its value (regression). The teacher term and its scale are the objective's.
``alpha = 1`` is plain supervised training (teacher, scratch student), where ``t`` is not used.
Rows without a label (a transfer set, ``LossSpec.masked``) get the teacher term alone: the loss is
the batch mean of ``w * label term + (1 - w) * scale * teacher term``, ``w = alpha`` on a labelled
row and 0 on the others.

An objective may take the teacher's outputs its own way (``targets``): then it replaces the
classification compressor of stage 2 with the unregistered one of that name in ``compressors.py``
(``logits``: the logits as they are; ``argmax``: the one-hot row of the teacher's class).

Each objective is registered here by name, with its definition in numpy (the teacher term of each
row, in float64): the reference the tests hold both frameworks to. Each backend implements every
objective under the same name (``TEACHER_TERMS`` in ``torch_backend.py`` and ``tf_backend.py``),
written from that definition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from distillbench.implementations.registry import Registry

if TYPE_CHECKING:
    from distillbench.implementations.pipeline import LossSpec

TeacherTerm = Callable[[np.ndarray, np.ndarray, "LossSpec"], np.ndarray]  # (outputs, targets, loss) -> per row


@dataclass(frozen=True)
class Objective:
    name: str
    tasks: tuple[str, ...]
    scale: Callable[[LossSpec], float]  # the teacher term's factor
    reference: TeacherTerm  # the teacher term of each row, in numpy (float64)
    targets: str | None = None  # classification: stage 2 in place of the compressor (compressors.OWN_TARGETS)


OBJECTIVES: Registry[Objective] = Registry("objective")


def register_objective(
    name: str, tasks: tuple[str, ...], scale: Callable[[LossSpec], float], targets: str | None = None
):
    """Function decorator: the objective ``name`` for these tasks, defined by the decorated numpy
    function (outputs (n, C) or (n, 1), targets, the LossSpec) -> the teacher term of each row;
    ``targets``: its own stage 2 (see the module's docstring)."""

    def register(reference: TeacherTerm) -> TeacherTerm:
        OBJECTIVES.add(name, Objective(name, tasks, scale, reference, targets))
        return reference

    return register


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))


@register_objective(
    "soft_targets",
    ("classification", "regression"),
    scale=lambda loss: loss.temperature**2 if loss.task == "classification" and loss.t_squared else 1.0,
)
def soft_targets(out: np.ndarray, t: np.ndarray, loss: LossSpec) -> np.ndarray:
    """The compressed teacher outputs as targets (Hinton et al. 2015). Classification: ``KL(t ||
    softmax(s / T))`` (``0 log 0 = 0``), scaled by ``T^2`` (``t_squared``, on by default), which keeps
    the soft-target gradients on the scale of the hard-label ones as T changes. Regression: the
    squared error ``(s - t)^2``, unscaled."""
    s = np.asarray(out, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if loss.task == "regression":
        return (s[:, 0] - t) ** 2
    log_p = log_softmax(s / loss.temperature)
    return np.sum(np.where(t > 0, t * (np.log(np.where(t > 0, t, 1.0)) - log_p), 0.0), axis=1)


@register_objective("logit_matching", ("classification",), scale=lambda loss: 1.0, targets="logits")
def logit_matching(out: np.ndarray, t: np.ndarray, loss: LossSpec) -> np.ndarray:
    """The teacher's logits as targets (Ba & Caruana 2014): the mean over classes of ``(s - z)^2``,
    unscaled, ``z`` the teacher's raw outputs (no compressor, no temperature)."""
    return np.mean((np.asarray(out, dtype=np.float64) - np.asarray(t, dtype=np.float64)) ** 2, axis=1)


@register_objective("hard_labels", ("classification",), scale=lambda loss: 1.0, targets="argmax")
def hard_labels(out: np.ndarray, t: np.ndarray, loss: LossSpec) -> np.ndarray:
    """The teacher's most likely class as a pseudo-label: the cross-entropy ``-sum_c t_c log
    softmax(s)_c`` against its one-hot row ``t``, unscaled (no compressor, no temperature)."""
    return -np.sum(np.asarray(t, dtype=np.float64) * log_softmax(np.asarray(out, dtype=np.float64)), axis=1)


def reference_loss(loss: LossSpec, out: np.ndarray, y: np.ndarray, t: np.ndarray | None) -> float:
    """The whole loss in numpy, as each backend's ``loss_fn`` must compute it; with ``loss.masked``,
    the rows whose label is missing (-1, NaN) get the teacher term alone."""
    s = np.asarray(out, dtype=np.float64)
    labelled = np.isfinite(y) if loss.task == "regression" else y >= 0
    y = np.where(labelled, y, 0)
    if loss.task == "regression":
        label = (s[:, 0] - y) ** 2
    else:
        label = -log_softmax(s)[np.arange(len(y)), y]
    if loss.alpha == 1.0 and not loss.masked:
        return float(loss.alpha * np.mean(label))
    objective = OBJECTIVES[loss.objective]
    teacher = objective.scale(loss) * objective.reference(s, t, loss)
    if loss.masked:
        w = loss.alpha * labelled
        return float(np.mean(w * label + (1.0 - w) * teacher))
    return float(loss.alpha * np.mean(label) + (1.0 - loss.alpha) * np.mean(teacher))
