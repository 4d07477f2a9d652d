"""The sanity checks of a model, by name: the one place that says what each flag means and when it is
raised. A job sets each model's ``flags`` as it records it (``running/job.py``); the report, the
terminal summary and ``compare`` read them from the records.

- ``budget``: training ended on its budget, not because it had converged: ``stop_reason`` is one of
  ``pipeline.BUDGET_REASONS`` (``max_steps``, ``max_epochs``, ``max_iter``, ``time_limit``). The
  model may have had more to learn: its numbers are suspect.
- ``diverged``: the validation loss became NaN or infinite; the weights kept are the best before it.
- ``below_linear``: a student worse than the ``linear`` reference fitted on the same split (same
  seed, same training rows), by more than ``compare``'s noise floor of the primary metric
  (``metric_registry``: accuracy 0.01, RMSE 2%).
- ``far_below_hgb``: a teacher worse than the ``hgb`` reference on the same split by more than
  ``FAR_BELOW_HGB`` of the primary metric: three times the seed-to-seed standard deviation of the
  paired difference (teacher - hgb on the same split), the median over the datasets measured (iris,
  vehicle, credit-g, boston, abalone; 3 seeds; README, "Reference models and sanity checks"):
  0.026 accuracy, 6% of the RMSE.
"""

from __future__ import annotations

from distillbench.benchmarks.store.metric_registry import DEFAULT_FLOORS, HIGHER_IS_BETTER
from distillbench.implementations.pipeline import BUDGET_REASONS
from distillbench.implementations.roles import STUDENTS

FLAGS = {
    "budget": "ended on the training budget (may not have converged)",
    "diverged": "diverged (NaN or infinite validation loss)",
    "below_linear": "below the linear reference",
    "far_below_hgb": "far below the HistGradientBoosting reference",
}
# How far below HGB a teacher must be to be flagged, per primary metric (a number: absolute; "N%":
# relative to HGB's value).
FAR_BELOW_HGB = {"accuracy": "0.08", "rmse": "18%"}


def _worse_by_more_than(metric: str, value: float, reference: float, margin: str) -> bool:
    allowed = abs(reference) * float(margin[:-1]) / 100 if margin.endswith("%") else float(margin)
    worse = reference - value if HIGHER_IS_BETTER[metric] else value - reference
    return worse > allowed


def below_linear(metric: str, value: float | None, linear: float | None) -> bool:
    """Worse than the linear reference's ``linear`` by more than compare's noise floor of ``metric``."""
    return (
        value is not None and linear is not None and _worse_by_more_than(metric, value, linear, DEFAULT_FLOORS[metric])
    )


def model_flags(record: dict, references: dict[str, float] | None) -> list[str]:
    """The flags of a model's ok record: from its own ``stop_reason``, and against ``references``
    (the primary metric of the reference roles on the same split; None: no comparison)."""
    flags = []
    if record.get("stop_reason") in BUDGET_REASONS:
        flags.append("budget")
    if record.get("stop_reason") == "diverged":
        flags.append("diverged")
    metric = record.get("primary_metric")
    value = (record.get("metrics") or {}).get(metric)
    if references and metric is not None and value is not None:
        if record["role"] in STUDENTS and below_linear(metric, value, references.get("linear")):
            flags.append("below_linear")
        if (
            record["role"] == "teacher"
            and references.get("hgb") is not None
            and _worse_by_more_than(metric, value, references["hgb"], FAR_BELOW_HGB[metric])
        ):
            flags.append("far_below_hgb")
    return flags


def flag_note(records: list[dict]) -> str:
    """The flags of these records (one model's, over seeds) in a few words: "budget 2/3, below linear 1/3"."""
    counts = {flag: sum(flag in (r.get("flags") or []) for r in records) for flag in FLAGS}
    return ", ".join(f"{flag.replace('_', ' ')} {n}/{len(records)}" for flag, n in counts.items() if n)
