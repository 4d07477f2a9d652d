"""Quality metrics on the test split, and the derived comparisons between roles.

Every metric is computed in the target's own units (regression predictions are un-standardised
first). Each metric's direction, and the primary metric of a task (used for retention and gain:
accuracy for classification, RMSE for regression), are in ``store/metric_registry.py``.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from distillbench.benchmarks.store.metric_registry import HIGHER_IS_BETTER


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float | None]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.arange(probs.shape[1])
    predicted = probs.argmax(axis=1)
    try:
        if probs.shape[1] == 2:
            auc = skm.roc_auc_score(y_true, probs[:, 1])
        else:
            auc = skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=labels)
    except ValueError:  # a class absent from the test split: AUC is undefined
        auc = None
    if auc is not None and not np.isfinite(auc):  # newer scikit-learn warns and returns NaN instead of raising
        auc = None
    return {
        "accuracy": float(skm.accuracy_score(y_true, predicted)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, predicted)),
        "log_loss": float(skm.log_loss(y_true, probs, labels=labels)),
        "roc_auc": None if auc is None else float(auc),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": float(skm.r2_score(y_true, y_pred)),
    }


def retention(student: float, teacher: float, metric: str) -> float | None:
    """Student quality as a percentage of the teacher's: 100 means equal, above 100 means better,
    for metrics where higher is better (student / teacher) and lower is better (teacher / student)."""
    num, den = (student, teacher) if HIGHER_IS_BETTER[metric] else (teacher, student)
    return None if den == 0 else 100.0 * num / den


def kd_gain(distilled: float, scratch: float, metric: str) -> float | None:
    """How much better the distilled student is than the scratch student, in percent of the scratch
    student's value; positive means distillation helped, whatever the metric's direction."""
    if scratch == 0:
        return None
    diff = distilled - scratch if HIGHER_IS_BETTER[metric] else scratch - distilled
    return 100.0 * diff / abs(scratch)


Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def difference_noise(task: str, y_true: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """How much two models' primary metric can differ on the test split by the luck of its rows
    alone: 1.96 standard errors of the paired per-row difference. Accuracy: of the rows' correctness
    (``a``, ``b``: class probabilities); RMSE: of the squared errors (``a``, ``b``: predictions in
    the target's units), carried to the RMSE by ``RMSE_a - RMSE_b = (MSE_a - MSE_b) / (RMSE_a +
    RMSE_b)``. The noise floor of a gap that one seed is all there is to judge it by."""
    if task == "classification":
        rows, scale = (a.argmax(axis=1) == y_true).astype(float) - (b.argmax(axis=1) == y_true), 1.0
    else:
        error_a, error_b = (np.asarray(a, float) - y_true) ** 2, (np.asarray(b, float) - y_true) ** 2
        rows, scale = error_a - error_b, np.sqrt(error_a.mean()) + np.sqrt(error_b.mean())
        scale = 1.0 / scale if scale > 0 else 0.0
    return float(Z_95 * scale * rows.std(ddof=1) / np.sqrt(len(rows))) if len(rows) > 1 else float("inf")


def gap_closed(distilled: float, scratch: float, teacher: float, metric: str, noise: float) -> dict:
    """The teacher's lead over the scratch student (``gap``, in the metric's units, positive when the
    teacher is better whatever the metric's direction), the noise it is judged against, and the share
    of it the distilled student closes, ``100 * (kd - scratch) / (teacher - scratch)`` in percent
    (100: all of it, 0: none, negative: worse than scratch), only where the gap exceeds the noise:
    otherwise there is no gap to close (None)."""
    gap = teacher - scratch if HIGHER_IS_BETTER[metric] else scratch - teacher
    closed = 100.0 * (distilled - scratch) / (teacher - scratch) if gap > noise else None
    return {"gap": gap, "gap_noise": noise, "gap_closed": closed}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator
