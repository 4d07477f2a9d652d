"""Each framework's student loss against an independent numpy computation of the design's formulas:

classification: alpha * CE(y, s) + (1 - alpha) * [T^2] * KL(q || softmax(s / T))
regression:     alpha * MSE(y, s) + (1 - alpha) * MSE(t, s)

and, for every registered objective (implementations/objectives.py), against its numpy definition.
"""

from __future__ import annotations

import numpy as np
import pytest

from distillbench.implementations import tf_backend, torch_backend
from distillbench.implementations.objectives import OBJECTIVES, reference_loss
from distillbench.implementations.pipeline import LossSpec

N_ROWS = 64
FRAMEWORKS = ["torch", "tensorflow"]


def framework_loss(framework: str, spec: LossSpec, out: np.ndarray, y: np.ndarray, t: np.ndarray | None) -> float:
    if framework == "torch":
        import torch

        fn = torch_backend.loss_fn(spec)
        return float(fn(torch.from_numpy(out), torch.from_numpy(y), None if t is None else torch.from_numpy(t)))
    import tensorflow as tf

    fn = tf_backend.loss_fn(spec)
    return float(fn(tf.constant(out), tf.constant(y), None if t is None else tf.constant(t)))


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))


def reference_classification(out, y, q, alpha, temperature, t_squared) -> float:
    s = out.astype(np.float64)
    ce = -np.mean(np_log_softmax(s)[np.arange(len(y)), y])
    if alpha == 1.0:
        return alpha * ce
    q = q.astype(np.float64)
    log_p = np_log_softmax(s / temperature)
    terms = np.where(q > 0, q * (np.log(np.where(q > 0, q, 1.0)) - log_p), 0.0)
    kl = np.mean(np.sum(terms, axis=1))
    return alpha * ce + (1 - alpha) * (temperature**2 if t_squared else 1.0) * kl


def classification_batch(n_classes: int, targets: str, seed: int = 0):
    rng = np.random.default_rng([seed, n_classes])
    out = (2.0 * rng.normal(size=(N_ROWS, n_classes))).astype(np.float32)
    y = rng.integers(0, n_classes, size=N_ROWS).astype(np.int64)
    q = np.exp(rng.normal(size=(N_ROWS, n_classes)))
    if targets == "with_zeros":  # as top-k leaves them: each row keeps its k largest, k in 1 .. C-1
        keep = rng.integers(1, n_classes, size=N_ROWS)
        rank = np.argsort(np.argsort(-q, axis=1), axis=1)
        q = np.where(rank < keep[:, None], q, 0.0)
    q = (q / q.sum(axis=1, keepdims=True)).astype(np.float32)
    return out, y, q


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("n_classes", [2, 5], ids=["binary", "multiclass"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("t_squared", [True, False], ids=["t2", "no_t2"])
@pytest.mark.parametrize("targets", ["dense", "with_zeros"])
def test_classification_loss_matches_numpy(framework, n_classes, alpha, temperature, t_squared, targets):
    out, y, q = classification_batch(n_classes, targets)
    if targets == "with_zeros":
        assert np.any(q == 0)
    spec = LossSpec("classification", alpha=alpha, temperature=temperature, t_squared=t_squared)
    expected = reference_classification(out, y, q, alpha, temperature, t_squared)
    got = framework_loss(framework, spec, out, y, None if alpha == 1.0 else q)
    assert np.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kl_is_zero_when_the_student_matches_the_targets(framework, temperature):
    out, y, _ = classification_batch(4, "dense")
    q = np.exp(np_log_softmax(out.astype(np.float64) / temperature)).astype(np.float32)
    spec = LossSpec("classification", alpha=0.0, temperature=temperature)
    assert framework_loss(framework, spec, out, y, q) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_regression_loss_matches_numpy(framework, alpha):
    rng = np.random.default_rng(5)
    out = rng.normal(size=(N_ROWS, 1)).astype(np.float32)
    y = rng.normal(size=N_ROWS).astype(np.float32)
    t = (y + 0.5 * rng.normal(size=N_ROWS)).astype(np.float32)
    s = out[:, 0].astype(np.float64)
    expected = alpha * np.mean((s - y) ** 2) + (1 - alpha) * np.mean((s - t) ** 2)
    got = framework_loss(framework, LossSpec("regression", alpha=alpha), out, y, None if alpha == 1.0 else t)
    assert got == pytest.approx(expected, rel=1e-5)


# --- the registry of objectives ------------------------------------------------------------------

def test_each_framework_implements_every_registered_objective():
    assert list(OBJECTIVES) == ["soft_targets"]
    assert set(torch_backend.TEACHER_TERMS) == set(tf_backend.TEACHER_TERMS) == set(OBJECTIVES)


CASES = [(name, task) for name, objective in OBJECTIVES.items() for task in objective.tasks]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("objective", "task"), CASES)
@pytest.mark.parametrize("n_classes", [2, 5], ids=["binary", "multiclass"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("t_squared", [True, False], ids=["t2", "no_t2"])
def test_each_framework_computes_each_objective_as_its_numpy_definition(framework, objective, task, n_classes, alpha,
                                                                         t_squared):
    spec = LossSpec(task, alpha=alpha, temperature=2.5, t_squared=t_squared, objective=objective)
    if task == "classification":
        out, y, t = classification_batch(n_classes, "with_zeros", seed=1)
    else:
        rng = np.random.default_rng(7)
        out, y = rng.normal(size=(N_ROWS, 1)).astype(np.float32), rng.normal(size=N_ROWS).astype(np.float32)
        t = (y + 0.5 * rng.normal(size=N_ROWS)).astype(np.float32)
    got = framework_loss(framework, spec, out, y, None if alpha == 1.0 else t)
    assert got == pytest.approx(reference_loss(spec, out, y, t), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("t_squared", [True, False])
def test_the_soft_targets_definition_is_the_design_formula(n_classes, t_squared):
    out, y, q = classification_batch(n_classes, "with_zeros")
    spec = LossSpec("classification", alpha=0.3, temperature=4.0, t_squared=t_squared)
    expected = reference_classification(out, y, q, 0.3, 4.0, t_squared)
    assert reference_loss(spec, out, y, q) == pytest.approx(expected, rel=1e-12)
