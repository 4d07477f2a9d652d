"""The registry of metrics: every number of a record that runs are compared on, in one table.

Each metric says whether higher is better, its kind (quality: what the model predicts; timing: what
it costs), its default noise floor in `distillbench compare` (a number: an absolute difference in the
metric's units; "N%": relative to the baseline's mean, for the metrics in the target's units, whose
scale differs from one dataset to the next; retention and kd_gain are percentages, their floor is in
points), and the task it is the primary metric of (used for retention and KD gain, and shown first).
Test metrics are in a record's ``metrics``; the derived ones (a student's numbers against the teacher
or the scratch student) and the timings are fields of the record itself. The order is the order of
tables and of `compare`'s rows. Computing the test metrics is ``running/metrics.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

QUALITY, TIMING = "quality", "timing"


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    kind: str  # QUALITY | TIMING
    floor: str | None = None  # quality: compare's default noise floor
    primary_for: str | None = None  # the task whose primary metric this is
    derived: bool = False  # quality: a record field derived from the test metrics, not a test metric
    unit: str = ""  # timing


METRICS = (
    Metric("accuracy", True, QUALITY, "0.01", primary_for="classification"),
    Metric("balanced_accuracy", True, QUALITY, "0.01"),
    Metric("log_loss", False, QUALITY, "5%"),
    Metric("roc_auc", True, QUALITY, "0.01"),
    Metric("rmse", False, QUALITY, "2%", primary_for="regression"),
    Metric("mae", False, QUALITY, "2%"),
    Metric("r2", True, QUALITY, "0.01"),
    Metric("retention", True, QUALITY, "2", derived=True),
    Metric("kd_gain", True, QUALITY, "2", derived=True),
    Metric("train_seconds", False, TIMING, unit="s"),
    Metric("latency_p50_us", False, TIMING, unit="us"),
    Metric("throughput_rows_per_s", True, TIMING, unit="rows/s"),
)

BY_NAME = {m.name: m for m in METRICS}
HIGHER_IS_BETTER = {m.name: m.higher_is_better for m in METRICS}
TEST_METRICS = tuple(m.name for m in METRICS if m.kind == QUALITY and not m.derived)
DERIVED_QUALITY = tuple(m.name for m in METRICS if m.kind == QUALITY and m.derived)
QUALITY_METRICS = TEST_METRICS + DERIVED_QUALITY
TIMING_METRICS = tuple(m.name for m in METRICS if m.kind == TIMING)
DEFAULT_FLOORS = {m.name: m.floor for m in METRICS if m.floor is not None}
PRIMARY_METRIC = {m.primary_for: m.name for m in METRICS if m.primary_for}  # task -> its primary metric
