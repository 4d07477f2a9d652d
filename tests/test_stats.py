"""The report's statistics (benchmarks/reporting/stats.py) against scipy and published tables, on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from distillbench.benchmarks.reporting import stats

SAMPLE = [0.81, 0.79, 0.85, 0.80, 0.83]


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_mean_ci_is_the_student_t_interval(level) -> None:
    estimate = stats.mean_ci(SAMPLE, level)
    low, high = sp.t.interval(level, len(SAMPLE) - 1, loc=np.mean(SAMPLE), scale=sp.sem(SAMPLE))
    assert estimate.n == 5
    assert estimate.mean == pytest.approx(np.mean(SAMPLE), abs=1e-12)
    assert (estimate.low, estimate.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))


def test_mean_ci_by_hand() -> None:
    # mean 2, s = 1, n = 3: half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051
    assert stats.mean_ci([1.0, 2.0, 3.0]).half == pytest.approx(2.484138, abs=1e-6)


def test_mean_ci_of_one_value_has_no_interval_and_missing_values_are_skipped() -> None:
    assert stats.mean_ci([0.7]) == stats.Estimate(0.7, None, 1)
    assert stats.mean_ci([]) == stats.Estimate(None, None, 0)
    assert stats.mean_ci([None, 0.5, float("nan")]) == stats.Estimate(0.5, None, 1)
    assert stats.mean_ci([0.5, None, 0.7]).n == 2
    assert stats.Estimate(0.7, None, 1).low is None


def test_paired_difference_ci_skips_incomplete_pairs() -> None:
    a, b = [0.9, 0.8, 0.85, None], [0.88, 0.81, 0.80, 0.7]
    estimate = stats.paired_diff_ci(a, b)
    diffs = np.array([0.02, -0.01, 0.05])
    low, high = sp.t.interval(0.95, 2, loc=diffs.mean(), scale=sp.sem(diffs))
    assert estimate.n == 3 and estimate.low == pytest.approx(low) and estimate.high == pytest.approx(high)


def test_ratio_median_and_win_tie_loss() -> None:
    assert stats.ratio_of_means([2.0, 4.0], [1.0, 2.0]) == pytest.approx(2.0)
    assert stats.ratio_of_means([2.0], [0.0]) is None and stats.ratio_of_means([], [1.0]) is None
    assert stats.median([3.0, None, 1.0, 2.0]) == 2.0 and stats.median([None]) is None
    assert stats.win_tie_loss([1.5, 0.0, -0.2, 3.0, None]) == (2, 1, 1)


def test_wilcoxon_matches_scipy() -> None:
    diffs = [1.2, -0.4, 2.5, 0.8, 3.1, -0.9, 1.7, 0.0]
    expected = sp.wilcoxon(diffs)  # zero_method "wilcox": the zero difference is dropped
    assert stats.wilcoxon(diffs) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))
    # exact distribution for few datasets: W = 0 from 6 positive differences gives p = 2 / 2**6
    assert stats.wilcoxon([1, 2, 3, 4, 5, 6]) == (0.0, pytest.approx(2 / 64))


def test_wilcoxon_without_a_nonzero_difference_is_undefined() -> None:
    assert stats.wilcoxon([0.0, 0.0, None]) == (None, None)
    assert stats.wilcoxon([]) == (None, None)


def test_ranks_best_first_with_ties_averaged() -> None:
    scores = np.array([[0.9, 0.8, 0.7], [0.5, 0.5, 0.9]])
    assert stats.ranks(scores).tolist() == [[1, 2, 3], [2.5, 2.5, 1]]
    assert np.array_equal(stats.ranks(scores), sp.rankdata(-scores, axis=1))


def test_friedman_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(8, 4)) + np.array([0.0, 0.3, 0.6, 1.2])
    expected = sp.friedmanchisquare(*scores.T)
    assert stats.friedman(scores) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))
    # Demsar (2006), eq. for chi2_F from mean ranks: 12N / (k(k+1)) * (sum R_j^2 - k(k+1)^2 / 4), no ties
    mean_ranks = stats.ranks(scores).mean(axis=0)
    n, k = scores.shape
    by_hand = 12 * n / (k * (k + 1)) * (np.sum(mean_ranks**2) - k * (k + 1) ** 2 / 4)
    assert stats.friedman(scores)[0] == pytest.approx(by_hand)


def test_friedman_needs_three_methods_and_two_datasets() -> None:
    assert stats.friedman(np.ones((5, 2))) == (None, None)
    assert stats.friedman(np.ones((1, 4))) == (None, None)
    assert stats.friedman(np.ones((5, 3))) == (None, None)  # all tied: no statistic


# Demsar (2006), Table 5(a): critical values q_0.05 of the two-tailed Nemenyi test, k = 2..10
DEMSAR_Q05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]


@pytest.mark.parametrize("k,q", list(zip(range(2, 11), DEMSAR_Q05)))
def test_nemenyi_q_matches_demsar_table(k, q) -> None:
    assert stats.nemenyi_q(k) == pytest.approx(q, abs=1.5e-3)


def test_nemenyi_critical_difference() -> None:
    # Demsar's example: k = 4 methods, N = 14 data sets, CD = 2.569 * sqrt(4*5 / (6*14)) = 1.25
    assert stats.nemenyi_cd(4, 14) == pytest.approx(1.25, abs=0.005)
    assert stats.nemenyi_cd(6, 6) == pytest.approx(stats.nemenyi_q(6) * math.sqrt(6 * 7 / 36))


def test_cliques_join_methods_closer_than_the_critical_difference() -> None:
    assert stats.cliques([1.0, 1.5, 2.2, 3.9, 4.0], cd=1.3) == [(0, 2), (3, 4)]
    assert stats.cliques([1.0, 2.0, 3.0], cd=0.5) == []
    assert stats.cliques([1.0, 1.2, 1.4], cd=5.0) == [(0, 2)]
    assert stats.cliques([1.0, 2.0, 2.5, 3.4], cd=1.5) == [(0, 1), (1, 3)]  # 2.5 - 1.0 is not < 1.5
