"""The distilled student's objectives: how its loss uses the teacher's compressed targets ``t``.

A loss (``pipeline.LossSpec``) is ``alpha * label term + (1 - alpha) * scale * teacher term``, each
term the mean over the batch's rows of a value per row. The label term is the same for every
objective: cross-entropy of the student's logits ``s`` with the labels (classification), or the
squared error of its value (regression). The teacher term and its scale are the objective's.
``alpha = 1`` is plain supervised training (teacher, scratch student), where ``t`` is not used.

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


OBJECTIVES: Registry[Objective] = Registry("objective")


def register_objective(name: str, tasks: tuple[str, ...], scale: Callable[[LossSpec], float]):
    """Function decorator: the objective ``name`` for these tasks, defined by the decorated numpy
    function (outputs (n, C) or (n, 1), targets, the LossSpec) -> the teacher term of each row."""

    def register(reference: TeacherTerm) -> TeacherTerm:
        OBJECTIVES.add(name, Objective(name, tasks, scale, reference))
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


def reference_loss(loss: LossSpec, out: np.ndarray, y: np.ndarray, t: np.ndarray | None) -> float:
    """The whole loss in numpy, as each backend's ``loss_fn`` must compute it."""
    s = np.asarray(out, dtype=np.float64)
    if loss.task == "regression":
        label = np.mean((s[:, 0] - y) ** 2)
    else:
        label = -np.mean(log_softmax(s)[np.arange(len(y)), y])
    if loss.alpha == 1.0:
        return float(loss.alpha * label)
    objective = OBJECTIVES[loss.objective]
    return float(
        loss.alpha * label + (1.0 - loss.alpha) * objective.scale(loss) * np.mean(objective.reference(s, t, loss))
    )
