"""Reference models: where each number of the pipeline stands.

Two framework-independent scikit-learn models, fitted once per (dataset, seed) on exactly the rows
the teacher sees (the same split and preparation, ``pipeline.labelled_data``) and measured like any
other model (quality, training time, latency, size):

- ``linear``: ``LogisticRegression`` (multinomial, lbfgs, C = 1) or ``Ridge`` (alpha = 1), on the
  prepared features (standardised numeric, one-hot categorical). A student below it has learned
  less than a linear model could.
- ``hgb``: ``HistGradientBoostingClassifier``/``Regressor`` with scikit-learn's defaults (learning
  rate 0.1, 31 leaves, 10 iterations of patience) but ``max_iter`` = ``HGB_MAX_ITER``, early-stopped
  on the same validation split and cut back to its best iteration, as the tree teacher is
  (``trees.fit_teacher``). The usual strong baseline on tabular data: a teacher far below it is a
  weak teacher.

How each ended (``FitResult.stop_reason``): ``converged`` (the linear solver), ``early_stopping``
(HGB), or ``max_iter`` (the iterations ran out: a budget).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from sklearn.linear_model import LogisticRegression, Ridge

from distillbench.implementations import trees
from distillbench.implementations.pipeline import Data, FitResult
from distillbench.implementations.spec import TeacherSpec, TrainingSpec

HGB_MAX_ITER = 1000
HGB_PATIENCE = 10  # scikit-learn's n_iter_no_change
LINEAR_MAX_ITER = 1000


class LinearModel(trees.SklearnModel):
    def size(self) -> tuple[int, int | None]:
        coef = self.estimator.coef_
        return int(coef.size + self.estimator.intercept_.size), int(coef.size)


def fit_linear(
    data: Data, training: TrainingSpec, seed: int, threads: int | None = None
) -> tuple[LinearModel, FitResult]:
    """Logistic regression or ridge regression. Its ``FitResult`` counts the solver's iterations as
    epochs and steps (1 for ridge's closed form)."""
    with trees._threads(threads):
        if data.task == "classification":
            estimator = LogisticRegression(C=1.0, max_iter=LINEAR_MAX_ITER, random_state=seed).fit(
                data.x_train, data.y_train
            )
            iterations = int(estimator.n_iter_.max())
        else:
            estimator = Ridge(alpha=1.0).fit(data.x_train, data.y_train)
            iterations = 1
    model = LinearModel(estimator, data.n_classes, threads)
    reason = "max_iter" if iterations >= LINEAR_MAX_ITER else "converged"
    return model, FitResult(
        epochs=iterations,
        best_epoch=iterations,
        best_val_loss=trees.val_loss(model, data),
        steps=iterations,
        best_step=iterations,
        stop_reason=reason,
    )


def fit_hgb(
    data: Data, training: TrainingSpec, seed: int, threads: int | None = None
) -> tuple[trees.TreeTeacher, FitResult]:
    """HistGradientBoosting early-stopped on the validation split, the iterations after the best dropped."""
    return trees.fit_teacher(
        # max_iter: a field that the kind declares (spec.with_fields adds it), which mypy cannot see
        TeacherSpec(kind="hist_gradient_boosting", max_iter=HGB_MAX_ITER),  # type: ignore[call-arg]
        dataclasses.replace(training, patience=HGB_PATIENCE),
        data,
        seed,
        threads,
    )


# The reference roles (implementations/roles.py) and how each is fitted, in display order.
FITS: dict[str, Callable] = {"linear": fit_linear, "hgb": fit_hgb}
