"""The reference models (linear, hgb) and the sanity flags that hold each model to them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from distillbench.benchmarks.store.flags import FLAGS, flag_note, model_flags
from distillbench.implementations import references
from distillbench.implementations.parity import synthetic_problem
from distillbench.implementations.pipeline import Data, Pipeline, train_rows, training_data
from distillbench.implementations.roles import REFERENCES, role_sort_key
from distillbench.implementations.spec import PipelineSpec, TrainingSpec


def problem(kind: str, n_train: int = 300, n_val: int = 100):
    task, n_classes, x, y = synthetic_problem(kind, n_train + 2 * n_val, 6, seed=0)
    cut = n_train + n_val
    return Data(task, n_classes, x[:n_train], y[:n_train], x[n_train:cut], y[n_train:cut]), x[cut:], y[cut:]


@pytest.mark.parametrize("kind", ["regression", "binary", "multiclass"])
def test_the_references_are_fitted_and_served_like_any_model(kind):
    data, x_test, y_test = problem(kind)
    assert list(references.FITS) == list(REFERENCES) == ["linear", "hgb"]
    for role, fit in references.FITS.items():
        model, result = fit(data, TrainingSpec(patience=5), 0)
        served = model.serve()
        out = served.fn(x_test.astype(np.float32))
        assert out.dtype == np.float32 and out.shape == (len(x_test), data.n_classes or 1)
        assert "scikit-learn" in served.path and served.model_bytes > 0 and served.n_params > 0
        # better than predicting the mean / the majority class on held-out rows
        if data.task == "classification":
            assert np.mean(out.argmax(1) == y_test) > np.mean(y_test == np.bincount(data.y_train).argmax()) + 0.1, role
        else:
            assert np.sqrt(np.mean((out[:, 0] - y_test) ** 2)) < 0.8 * np.std(y_test), role
        assert result.steps >= 1 and 1 <= result.best_step <= result.steps and np.isfinite(result.best_val_loss)
        if role == "linear":
            assert result.stop_reason == "converged"
            coef = model.estimator.coef_
            assert (served.n_params, served.macs_per_row) == (coef.size + model.estimator.intercept_.size, coef.size)
        else:
            assert result.stop_reason == "early_stopping" and result.steps < references.HGB_MAX_ITER
            assert served.macs_per_row is None


def test_the_references_see_the_rows_the_teacher_sees():
    # The reference job fits on training_data(...), the very rows the pipeline's models train on.
    data, _, _ = problem("regression")
    spec = PipelineSpec(training=TrainingSpec(train_fraction=0.5))
    rows = training_data(data, spec.training, seed=3)
    assert np.array_equal(rows.x_train, data.x_train[train_rows(300, 0.5, 3)]) and np.array_equal(
        rows.x_val, data.x_val
    )
    assert np.array_equal(Pipeline(None, spec, data, seed=3).data.x_train, rows.x_train)
    assert training_data(data, TrainingSpec(), seed=3) is data


def test_a_linear_solver_out_of_iterations_is_a_budget(monkeypatch):
    data, _, _ = problem("multiclass")
    monkeypatch.setattr(references, "LINEAR_MAX_ITER", 2)
    with pytest.warns(ConvergenceWarning):
        _, result = references.fit_linear(data, TrainingSpec(), 0)
    assert (result.stop_reason, result.steps) == ("max_iter", 2)


def test_reference_roles_sort_after_the_models():
    order = sorted(["hgb", "student_kd_onnx", "linear", "teacher", "zzz", "student_kd"], key=role_sort_key)
    assert order == ["teacher", "student_kd", "student_kd_onnx", "linear", "hgb", "zzz"]


# ---- flags


def record(role: str, value: float, metric: str = "accuracy", stop_reason: str = "early_stopping") -> dict:
    return {"role": role, "primary_metric": metric, "metrics": {metric: value}, "stop_reason": stop_reason}


def test_a_model_on_its_budget_or_diverged_is_flagged_whatever_the_references():
    for reason in ("max_steps", "max_epochs", "max_iter", "time_limit"):
        assert model_flags(record("teacher", 0.9, stop_reason=reason), None) == ["budget"]
    assert model_flags(record("student_kd", 0.9, stop_reason="diverged"), None) == ["diverged"]
    assert (
        model_flags(record("student_kd", 0.9), None)
        == model_flags(record("hgb", 0.9, stop_reason="converged"), None)
        == []
    )


def test_a_student_below_the_linear_reference_by_more_than_the_floor_is_flagged():
    refs = {"linear": 0.90, "hgb": 0.95}
    assert model_flags(record("student_kd", 0.885), refs) == ["below_linear"]  # 0.015 below: beyond 0.01
    assert model_flags(record("student_scratch", 0.895), refs) == []  # within the floor
    assert model_flags(record("teacher", 0.80), {"linear": 0.90}) == []  # a teacher is held to hgb, not linear
    # RMSE: lower is better, the floor is 2% of the reference
    assert model_flags(record("student_kd", 5.15, "rmse"), {"linear": 5.0}) == ["below_linear"]
    assert model_flags(record("student_kd", 5.05, "rmse"), {"linear": 5.0}) == []
    assert model_flags(record("student_kd", 4.0, "rmse"), {"linear": 5.0}) == []


def test_a_teacher_far_below_hgb_is_flagged():
    # far: 0.08 of accuracy, 18% of the RMSE (three times the seed noise of the paired difference)
    assert model_flags(record("teacher", 0.85), {"linear": 0.80, "hgb": 0.94}) == ["far_below_hgb"]
    assert model_flags(record("teacher", 0.87), {"hgb": 0.94}) == []
    assert model_flags(record("teacher", 3.6, "rmse", "max_steps"), {"hgb": 3.0}) == ["budget", "far_below_hgb"]
    assert model_flags(record("teacher", 3.5, "rmse"), {"hgb": 3.0}) == []
    assert model_flags(record("student_kd", 0.5), {"hgb": 0.94}) == []  # students are held to linear


def test_flag_notes_count_the_seeds():
    rs = [{"flags": ["budget"]}, {"flags": ["budget", "below_linear"]}, {"flags": []}]
    assert flag_note(rs) == "budget 2/3, below linear 1/3"
    assert flag_note([{}, {"flags": []}]) == ""
    assert set(FLAGS) == {"budget", "diverged", "below_linear", "far_below_hgb"}
