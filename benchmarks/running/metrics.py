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


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator
