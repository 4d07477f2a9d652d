"""When a change between two runs counts: the verdict (improved, unchanged, regressed) of one quality
or timing cell of a comparison (``compare.py``), from the per-seed values of both runs.

Quality (test metrics, retention, KD gain) is compared against the noise, the seed-to-seed spread.
A cell regressed when the candidate is worse than the baseline by more than both an absolute floor
(per metric; relative to the baseline for the metrics in the target's units) and ``k`` standard
errors of the difference. Seed k is the same split and the same initial weights in every run, so
where the runs share at least two seeds the comparison is paired: the difference is the mean of the
per-seed differences and its standard error their sd / sqrt(n), free of the split-to-split
variation that dominates the spread of each run on its own. Otherwise (no shared seeds, or
``paired=False``) the spreads of both runs are combined (Welch: ``sqrt(sd_b^2 / n_b + sd_c^2 /
n_c)``). With one seed in each run the spread is unknown: the floor alone decides, and the
comparison says so.

Timing (training seconds, p50 latency at batch 1, throughput at a large batch) is compared as the
ratio of the medians over seeds, against a threshold, with a one-sided Mann-Whitney U test over the
per-seed measurements: a cell regressed when it is slower by more than the threshold and the test
says so at ``alpha`` (with too few seeds for the test to reach ``alpha``, the ratio alone).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from distillbench.benchmarks.store.metric_registry import DEFAULT_FLOORS, HIGHER_IS_BETTER, QUALITY_METRICS
from distillbench.benchmarks.store.record import SplitKey
from distillbench.errors import UserError

# The metrics, their directions and their default floors (the least change that counts): the registry.
DEFAULT_K = 2.0
DEFAULT_TIMING_THRESHOLD = 0.25  # 25% slower (ratio of medians 1.25)
DEFAULT_ALPHA = 0.05
FAIL_ON = ("quality", "timing", "all", "none")

IMPROVED, UNCHANGED, REGRESSED = "improved", "unchanged", "regressed"


@dataclass(frozen=True)
class Thresholds:
    k: float = DEFAULT_K
    floors: dict = field(default_factory=lambda: dict(DEFAULT_FLOORS))
    timing_threshold: float = DEFAULT_TIMING_THRESHOLD
    alpha: float = DEFAULT_ALPHA
    paired: bool = True  # quality: per-seed differences where the runs share seeds

    def floor(self, metric: str, baseline_mean: float) -> float:
        text = str(self.floors.get(metric, "0"))
        if text.endswith("%"):
            return abs(baseline_mean) * float(text[:-1]) / 100.0
        return float(text)


def parse_floor(text: str) -> tuple[str, str]:
    """``METRIC=VALUE`` with VALUE a non-negative number or a percentage ``N%``."""
    metric, sep, value = text.partition("=")
    metric, value = metric.strip(), value.strip()
    if not sep or metric not in QUALITY_METRICS:
        raise UserError(f"--floor {text!r}: expected METRIC=VALUE with METRIC one of {', '.join(QUALITY_METRICS)}")
    try:
        number = float(value[:-1] if value.endswith("%") else value)
    except ValueError:
        number = -1.0
    if not math.isfinite(number) or number < 0:
        raise UserError(f"--floor {text!r}: VALUE must be a non-negative number or a percentage like 2%")
    return metric, value


def sample_sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def compare_quality(
    metric: str, baseline: dict[SplitKey, float], candidate: dict[SplitKey, float], thresholds: Thresholds
) -> tuple:
    """(change, margin, basis, verdict) for one quality cell, from the per-seed values of both runs.

    Where the runs share at least two seeds the comparison is paired: seed k is the same split and
    the same initial weights in both runs, so the per-seed differences are free of the split-to-split
    variation, and their spread is the noise (SE = sd(differences) / sqrt(n)). Otherwise the two
    runs' own seed-to-seed spreads are combined (Welch: sqrt(sd_b^2 / n_b + sd_c^2 / n_c)). The change
    must exceed both the floor and k of these standard errors; with one seed per run, the floor alone."""
    mean_b = statistics.fmean(baseline.values())
    shared = sorted(set(baseline) & set(candidate))
    floor = thresholds.floor(metric, mean_b)
    if thresholds.paired and len(shared) >= 2:
        diffs = [candidate[s] - baseline[s] for s in shared]
        change, se, how = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs)), "paired"
    else:
        change = statistics.fmean(candidate.values()) - mean_b
        sd_b, sd_c = sample_sd(list(baseline.values())), sample_sd(list(candidate.values()))
        if sd_b is None and sd_c is None:
            se, how = None, None
        else:  # with one seed on one side, that side's spread is taken to be the other's
            sd_b = sd_c if sd_b is None else sd_b
            sd_c = sd_b if sd_c is None else sd_c
            assert sd_b is not None and sd_c is not None  # one of them was not None
            se, how = math.sqrt(sd_b**2 / len(baseline) + sd_c**2 / len(candidate)), "unpaired"
    if se is None:
        margin, basis = floor, "floor only: 1 seed"
    elif thresholds.k * se > floor:
        margin, basis = thresholds.k * se, f"{thresholds.k:g} SE {how}"
    else:
        margin, basis = floor, "floor"
    better = change if HIGHER_IS_BETTER[metric] else -change
    verdict = REGRESSED if better < -margin else IMPROVED if better > margin else UNCHANGED
    return change, margin, basis, verdict


def _min_p(n1: int, n2: int) -> float:
    """The smallest one-sided p-value an exact Mann-Whitney U test can give with these sample sizes."""
    return 1.0 / math.comb(n1 + n2, n1)


def compare_timing(metric: str, baseline: list[float], candidate: list[float], thresholds: Thresholds) -> tuple:
    """(slowdown, p, basis, verdict) for one timing cell: the ratio of the medians (> 1 = the
    candidate is slower, whatever the metric's direction) and a one-sided Mann-Whitney U test."""
    from scipy.stats import mannwhitneyu

    med_b, med_c = statistics.median(baseline), statistics.median(candidate)
    higher_better = HIGHER_IS_BETTER[metric]
    if med_b <= 0 or med_c <= 0:
        return None, None, "not positive", UNCHANGED
    slowdown = med_b / med_c if higher_better else med_c / med_b
    limit = 1.0 + thresholds.timing_threshold
    testable = _min_p(len(baseline), len(candidate)) <= thresholds.alpha
    if slowdown > limit or slowdown < 1.0 / limit:
        if not testable:
            verdict = REGRESSED if slowdown > limit else IMPROVED
            return (
                slowdown,
                None,
                f"ratio only: {len(baseline)} vs {len(candidate)} seeds, too few for the test",
                verdict,
            )
        # "worse" is larger for lower-is-better metrics, smaller for throughput
        slower = "greater" if not higher_better else "less"
        faster = "less" if not higher_better else "greater"
        alternative = slower if slowdown > limit else faster
        p = float(mannwhitneyu(candidate, baseline, alternative=alternative, method="auto").pvalue)
        if p <= thresholds.alpha:
            return slowdown, p, "ratio + test", REGRESSED if slowdown > limit else IMPROVED
        return slowdown, p, "not significant", UNCHANGED
    return slowdown, None, "within threshold", UNCHANGED
