"""Each framework's student loss against an independent numpy computation of the design's formulas:

classification: alpha * CE(y, s) + (1 - alpha) * [T^2] * KL(q || softmax(s / T))   (soft targets)
                alpha * CE(y, s) + (1 - alpha) * MSE(z, s), z the teacher's logits   (logit matching)
                alpha * CE(y, s) + (1 - alpha) * CE(argmax z, s)                     (hard labels)
regression:     alpha * MSE(y, s) + (1 - alpha) * MSE(t, s)
with rows without a label (a transfer set): the mean over rows of w * label + (1 - w) * teacher
term, w = alpha on a labelled row and 0 on the others.

and, for every registered objective (implementations/objectives.py), against its numpy definition.
"""

from __future__ import annotations

import numpy as np
import pytest

from distillbench.implementations import tf_backend, torch_backend
from distillbench.implementations.compressors import fit_compressor
from distillbench.implementations.objectives import OBJECTIVES, reference_loss
from distillbench.implementations.pipeline import LossSpec, distill_loss, no_labels
from distillbench.implementations.spec import DistillSpec

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


# --- the other objectives, and batches with rows without a label (transfer sets) ---------------------


def reference_rows(task, objective, out, y, t, alpha, temperature, t_squared):
    """Per row: the label term and the scaled teacher term, in float64, from the formulas."""
    s = out.astype(np.float64)
    if task == "regression":
        return (s[:, 0] - y) ** 2, (s[:, 0] - t) ** 2
    label = -np_log_softmax(s)[np.arange(len(y)), np.maximum(y, 0)]
    if objective == "logit_matching":
        return label, np.mean((s - t) ** 2, axis=1)
    q = t.astype(np.float64)
    terms = np.where(q > 0, q * (np.log(np.where(q > 0, q, 1.0)) - np_log_softmax(s / temperature)), 0.0)
    return label, (temperature**2 if t_squared else 1.0) * np.sum(terms, axis=1)


def masked_batch(task: str, objective: str, labelled: str, seed: int = 3):
    """A batch whose rows have a label or not (y = no_labels): 'some', 'all' or 'none' of them."""
    rng = np.random.default_rng(seed)
    n_classes = 1 if task == "regression" else 4
    out = (2.0 * rng.normal(size=(N_ROWS, n_classes))).astype(np.float32)
    if task == "regression":
        y, t = rng.normal(size=N_ROWS).astype(np.float32), rng.normal(size=N_ROWS).astype(np.float32)
    else:
        y = rng.integers(0, n_classes, size=N_ROWS).astype(np.int64)
        logits = 3.0 * rng.normal(size=(N_ROWS, n_classes))
        t = (logits if objective == "logit_matching" else np.exp(np_log_softmax(logits))).astype(np.float32)
    mask = {"some": rng.random(N_ROWS) < 0.5, "all": np.ones(N_ROWS, bool), "none": np.zeros(N_ROWS, bool)}[labelled]
    y = np.where(mask, y, no_labels(task, N_ROWS))
    return out, y, t, mask


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("n_classes", [2, 5], ids=["binary", "multiclass"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_logit_matching_loss_matches_numpy(framework, n_classes, alpha):
    out, y, _ = classification_batch(n_classes, "dense")
    z = (3.0 * np.random.default_rng(9).normal(size=out.shape)).astype(np.float32)  # the teacher's logits
    s = out.astype(np.float64)
    expected = alpha * -np.mean(np_log_softmax(s)[np.arange(len(y)), y]) + (1 - alpha) * np.mean((s - z) ** 2)
    spec = LossSpec("classification", alpha=alpha, temperature=4.0, objective="logit_matching")  # T: unused
    assert OBJECTIVES["logit_matching"].scale(spec) == 1.0
    assert framework_loss(framework, spec, out, y, None if alpha == 1.0 else z) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_hard_labels_is_cross_entropy_with_the_teachers_class(framework, alpha):
    out, y, _ = classification_batch(5, "dense")
    logits = 3.0 * np.random.default_rng(11).normal(size=out.shape)
    distill = DistillSpec(alpha=alpha, temperature=4.0, objective="hard_labels")
    compressor = fit_compressor("classification", distill, logits, y)
    t = compressor.apply(logits)
    assert compressor.kind == "argmax" and np.array_equal(t.argmax(1), logits.argmax(1)) and np.all(t.sum(1) == 1)
    log_p = np_log_softmax(out.astype(np.float64))
    rows = np.arange(len(y))
    expected = alpha * -np.mean(log_p[rows, y]) + (1 - alpha) * -np.mean(log_p[rows, logits.argmax(1)])
    got = framework_loss(framework, distill_loss("classification", distill), out, y, t)
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(
    ("task", "objective"),
    [("regression", "soft_targets"), ("classification", "soft_targets"), ("classification", "logit_matching")],
)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("labelled", ["some", "all", "none"])
def test_rows_without_a_label_get_the_teacher_term_alone(framework, task, objective, alpha, labelled):
    out, y, t, mask = masked_batch(task, objective, labelled)
    temperature, t_squared = 2.0, True
    label, teacher = reference_rows(task, objective, out, y, t, alpha, temperature, t_squared)
    w = alpha * mask
    expected = np.mean(w * np.where(mask, label, 0.0) + (1 - w) * teacher)
    spec = LossSpec(task, alpha=alpha, temperature=temperature, t_squared=t_squared, objective=objective, masked=True)
    got = framework_loss(framework, spec, out, y, t)
    assert np.isfinite(got) and got == pytest.approx(expected, rel=1e-5)
    if labelled == "all":  # a batch of labelled rows only: the loss of a batch without a transfer set
        plain = framework_loss(framework, LossSpec(task, alpha, temperature, t_squared, objective), out, y, t)
        assert got == pytest.approx(plain, rel=1e-5)
    if labelled == "none":  # transfer rows only: the teacher term alone, whatever alpha
        assert got == pytest.approx(np.mean(teacher), rel=1e-5)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_rows_without_a_label_give_finite_gradients(framework, task):
    """The missing labels (NaN, -1) must not reach a gradient: a NaN there would poison every weight."""
    out, y, t, mask = masked_batch(task, "soft_targets", "some")
    spec = LossSpec(task, alpha=0.5, temperature=2.0, masked=True)
    if framework == "torch":
        import torch

        o = torch.from_numpy(out).requires_grad_(True)
        torch_backend.loss_fn(spec)(o, torch.from_numpy(y), torch.from_numpy(t)).backward()
        grad = o.grad.numpy()
    else:
        import tensorflow as tf

        o = tf.Variable(out)
        with tf.GradientTape() as tape:
            value = tf_backend.loss_fn(spec)(o, tf.constant(y), tf.constant(t))
        grad = tape.gradient(value, o).numpy()
    assert np.isfinite(grad).all() and np.abs(grad[~mask]).sum() > 0


# --- the registry of objectives ------------------------------------------------------------------


def test_each_framework_implements_every_registered_objective():
    assert list(OBJECTIVES) == ["soft_targets", "logit_matching", "hard_labels"]
    assert set(torch_backend.TEACHER_TERMS) == set(tf_backend.TEACHER_TERMS) == set(OBJECTIVES)


CASES = [(name, task) for name, objective in OBJECTIVES.items() for task in objective.tasks]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("objective", "task"), CASES)
@pytest.mark.parametrize("n_classes", [2, 5], ids=["binary", "multiclass"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("t_squared", [True, False], ids=["t2", "no_t2"])
@pytest.mark.parametrize("masked", [False, True], ids=["labelled", "transfer_rows"])
def test_each_framework_computes_each_objective_as_its_numpy_definition(
    framework, objective, task, n_classes, alpha, t_squared, masked
):
    spec = LossSpec(task, alpha=alpha, temperature=2.5, t_squared=t_squared, objective=objective, masked=masked)
    if task == "classification":
        out, y, t = classification_batch(n_classes, "with_zeros", seed=1)
    else:
        rng = np.random.default_rng(7)
        out, y = rng.normal(size=(N_ROWS, 1)).astype(np.float32), rng.normal(size=N_ROWS).astype(np.float32)
        t = (y + 0.5 * rng.normal(size=N_ROWS)).astype(np.float32)
    if masked:  # every third row is a transfer row: no label
        y = np.where(np.arange(N_ROWS) % 3 == 0, no_labels(task, N_ROWS), y)
    got = framework_loss(framework, spec, out, y, None if alpha == 1.0 and not masked else t)
    assert got == pytest.approx(reference_loss(spec, out, y, t), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("t_squared", [True, False])
def test_the_soft_targets_definition_is_the_design_formula(n_classes, t_squared):
    out, y, q = classification_batch(n_classes, "with_zeros")
    spec = LossSpec("classification", alpha=0.3, temperature=4.0, t_squared=t_squared)
    expected = reference_classification(out, y, q, 0.3, 4.0, t_squared)
    assert reference_loss(spec, out, y, q) == pytest.approx(expected, rel=1e-12)
