"""The statistics of a report: confidence intervals over seeds, paired tests and ranks over datasets.

Each function takes plain numbers and returns plain numbers (None where a statistic is undefined,
e.g. an interval from a single seed), so that the report can show "-" instead of failing.
"""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple

import numpy as np
from scipy import stats


class Estimate(NamedTuple):
    """A mean over ``n`` values and the half-width of its confidence interval (None when n < 2);
    ``note``: what a reader must know beside the number (e.g. the sanity flags of its models)."""

    mean: float | None
    half: float | None
    n: int
    note: str = ""

    @property
    def low(self) -> float | None:
        return None if self.mean is None or self.half is None else self.mean - self.half

    @property
    def high(self) -> float | None:
        return None if self.mean is None or self.half is None else self.mean + self.half


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def mean_ci(values, level: float = 0.95, test_train: float | None = None) -> Estimate:
    """Mean and Student-t confidence interval, ``mean +- t(n-1) * s / sqrt(n)``; None values are skipped.

    ``test_train``: the values come from resampled splits whose training sets overlap (the folds of
    cross-validation, over repeats), and this is n_test / n_train of a split. The values are then
    correlated and ``s^2 / n`` understates the variance of their mean: the interval is the corrected
    resampled t-test's, ``mean +- t(n-1) * s * sqrt(1/n + n_test/n_train)`` (Nadeau & Bengio 2003)."""
    values = _finite(values)
    n = len(values)
    if n == 0:
        return Estimate(None, None, 0)
    mean = statistics.fmean(values)
    if n < 2:
        return Estimate(mean, None, n)
    sem = statistics.stdev(values) * math.sqrt(1 / n + (test_train or 0.0))
    return Estimate(mean, float(stats.t.ppf(0.5 + level / 2, n - 1) * sem), n)


def paired_diff_ci(a, b, level: float = 0.95, test_train: float | None = None) -> Estimate:
    """Mean difference ``a - b`` of paired values (pairs with a None are skipped) and its t-interval
    (``mean_ci``'s, corrected with ``test_train`` for overlapping training sets)."""
    return mean_ci([x - y for x, y in zip(a, b) if x is not None and y is not None], level, test_train)


def ratio_of_means(numerators, denominators) -> float | None:
    num, den = mean_ci(numerators).mean, mean_ci(denominators).mean
    return None if num is None or not den else num / den


def median(values) -> float | None:
    values = _finite(values)
    return statistics.median(values) if values else None


def win_tie_loss(gains) -> tuple[int, int, int]:
    """Counts of positive, zero and negative values (a zero gain is a tie, as in the Wilcoxon test)."""
    values = _finite(gains)
    return sum(v > 0 for v in values), sum(v == 0 for v in values), sum(v < 0 for v in values)


def wilcoxon(differences) -> tuple[float | None, float | None]:
    """Two-sided Wilcoxon signed-rank test of paired differences against zero (zero differences are
    dropped); (statistic, p), or (None, None) when no difference is non-zero."""
    values = _finite(differences)
    if not any(values):
        return None, None
    result = stats.wilcoxon(values)
    return float(result.statistic), float(result.pvalue)


def ranks(scores: np.ndarray) -> np.ndarray:
    """Per row (a dataset), the rank of each column (a method): 1 = highest score, ties averaged."""
    return stats.rankdata(-np.asarray(scores, dtype=float), axis=1)


def friedman(scores: np.ndarray) -> tuple[float | None, float | None]:
    """Friedman test of k >= 3 methods (columns) over N datasets (rows); (statistic, p)."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.shape[1] < 3 or scores.shape[0] < 2:
        return None, None
    with np.errstate(invalid="ignore", divide="ignore"):  # every dataset tied: no statistic
        statistic, p = stats.friedmanchisquare(*scores.T)
    return (None, None) if not math.isfinite(statistic) else (float(statistic), float(p))


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """The Nemenyi critical value q_alpha for k methods: the studentized range quantile (infinite
    degrees of freedom) over sqrt(2) (Demsar 2006, table 5a)."""
    return float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def nemenyi_cd(k: int, n: int, alpha: float = 0.05) -> float:
    """Critical difference of mean ranks for k methods over n datasets: q_alpha * sqrt(k(k+1) / 6n)."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6 * n))


def cliques(mean_ranks, cd: float) -> list[tuple[int, int]]:
    """Groups of methods whose mean ranks differ by less than ``cd``: maximal runs (first, last) of
    positions in ascending rank order, each holding at least two methods."""
    order = sorted(mean_ranks)
    groups: list[tuple[int, int]] = []
    for i in range(len(order)):
        j = max(j for j in range(i, len(order)) if order[j] - order[i] < cd)
        if j > i and not (groups and groups[-1][1] >= j):
            groups.append((i, j))
    return groups
