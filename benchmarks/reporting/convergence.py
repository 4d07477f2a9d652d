"""The report's Convergence and Sanity checks sections: how every model's training ended, the models
that ended on their budget (whose numbers are suspect), and the models that fail a sanity check
against the reference roles (``store/flags.py``)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from distillbench.benchmarks.reporting.blocks import Table
from distillbench.benchmarks.store.flags import FAR_BELOW_HGB, FLAGS, below_linear
from distillbench.benchmarks.store.metric_registry import DEFAULT_FLOORS
from distillbench.benchmarks.store.record import framework_label, is_deployment, is_ok, job_key, split_key, split_label
from distillbench.implementations.pipeline import BUDGET_REASONS, STOP_REASONS
from distillbench.implementations.roles import REFERENCE, REFERENCES, STUDENTS, role_sort_key

SANITY_FLAGS = ("diverged", "below_linear", "far_below_hgb")


def _models(records: list[dict]) -> list[dict]:
    """The ok records of trained models (not deployment formats, not a sweep's reused models)."""
    return [r for r in records if is_ok(r) and not is_deployment(r) and not r.get("reused") and r.get("stop_reason")]


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def convergence_blocks(records: list[dict], labels: dict[int, str]) -> list:
    models = _models(records)
    blocks: list = [
        ("h2", "Convergence"),
        (
            "p",
            "How each model's training ended: early_stopping (no improvement of the validation loss for the "
            "patience), converged (a linear reference's solver), or a budget: max_steps, max_epochs, max_iter (a "
            "scikit-learn model's iterations), time_limit; diverged (NaN or infinite validation loss; the best "
            "weights before it are kept). Steps: optimiser steps (boosting or solver iterations for the "
            "references), medians over datasets and seeds; best: the steps behind the weights kept.",
        ),
    ]
    if not models:
        return blocks + [
            ("p", "No model of this run recorded how its training ended (a run from before the field existed).")
        ]
    groups = defaultdict(list)
    for r in models:
        groups[(framework_label(r), r["role"])].append(r)
    frameworks = list(dict.fromkeys(framework_label(r) for r in models if r["framework"] != REFERENCE)) + [REFERENCE]
    order = sorted(
        groups, key=lambda k: (frameworks.index(k[0]) if k[0] in frameworks else len(frameworks), role_sort_key(k[1]))
    )
    blocks.append(
        Table(
            "convergence",
            ["framework", "role", "models", *STOP_REASONS, "median steps", "median best step", "median epochs"],
            [
                [
                    framework,
                    role,
                    len(rs),
                    *(Counter(r["stop_reason"] for r in rs)[s] for s in STOP_REASONS),
                    _median(r.get("steps") for r in rs),
                    _median(r.get("best_step") for r in rs),
                    _median(r.get("epochs") for r in rs),
                ]
                for framework, role in order
                for rs in [groups[(framework, role)]]
            ],
        )
    )
    bound = sorted(
        (r for r in models if r["stop_reason"] in BUDGET_REASONS),
        key=lambda r: (labels.get(r["dataset_id"], ""), framework_label(r), split_key(r), role_sort_key(r["role"])),
    )
    share = f"{len(bound)} of {len(models)} models"
    if bound:
        blocks += [
            (
                "p",
                f"Ended on the budget: {share}. Their numbers may be those of models that had more to "
                "learn; the results tables mark them [budget n/N] (n of N seeds).",
            ),
            Table(
                "budget_bound",
                ["dataset", "framework", "seed", "role", "stop reason", "steps", "best step", "epochs", "quality"],
                [
                    [
                        labels.get(r["dataset_id"], r["dataset_id"]),
                        framework_label(r),
                        split_label(split_key(r)),
                        r["role"],
                        r["stop_reason"],
                        r.get("steps"),
                        r.get("best_step"),
                        r.get("epochs"),
                        r["metrics"].get(r["primary_metric"]),
                    ]
                    for r in bound
                ],
            ),
        ]
    else:
        blocks.append(
            ("p", f"Ended on the budget: none ({share}): every model stopped by early stopping or converged.")
        )
    return blocks


def _why_below_linear(record: dict, job: dict[str, dict], linear: float | None) -> str:
    """Which other models of the same job (and configuration) are below the linear reference too:
    whether the student inherited it from its teacher, shares it with the other student (the
    student's size or training falls short on this data), or owes it to distillation."""
    metric = record["primary_metric"]

    def below(role: str) -> bool:
        other = job.get(role)
        return other is not None and below_linear(metric, other["metrics"].get(metric), linear)

    if below("teacher"):
        return "its teacher is below the linear reference too: a student follows its teacher"
    others = [role for role in STUDENTS if role != record["role"] and role in job]
    if others and all(below(role) for role in others):
        return f"{', '.join(others)} too: this student falls short of a linear model on this data"
    if record["role"] == "student_kd":
        return "only the distilled student: distillation pulled it below (its teacher and the scratch student are not)"
    return "only this student"


def sanity_blocks(records: list[dict], labels: dict[int, str]) -> list:
    """The models flagged diverged, below the linear reference or far below HGB, each with the
    reference's number on the same split and, for a student below the linear reference, why."""
    refs = {
        (*job_key(r)[:3], r["role"]): r["metrics"].get(r["primary_metric"])
        for r in records
        if is_ok(r) and r["framework"] == REFERENCE and r["role"] in REFERENCES
    }
    jobs: dict[tuple, dict[str, dict]] = defaultdict(dict)  # every ok model of a job's configuration
    for r in records:
        if is_ok(r) and not is_deployment(r):
            jobs[(*job_key(r), r.get("variant"))][r["role"]] = r
    rows = []
    for r in _models(records):
        for flag in (f for f in r.get("flags") or [] if f in SANITY_FLAGS):
            against = {"below_linear": "linear", "far_below_hgb": "hgb"}.get(flag)
            reference = refs.get((*job_key(r)[:3], against)) if against else None
            job = jobs[(*job_key(r), r.get("variant"))]
            rows.append(
                [
                    labels.get(r["dataset_id"], r["dataset_id"]),
                    framework_label(r),
                    split_label(split_key(r)),
                    r["role"],
                    FLAGS[flag],
                    r["metrics"].get(r["primary_metric"]),
                    reference,
                    r["primary_metric"],
                    _why_below_linear(r, job, reference) if flag == "below_linear" else "",
                ]
            )
    floors = ", ".join(f"{metric} {DEFAULT_FLOORS[metric]}" for metric in FAR_BELOW_HGB)
    far = ", ".join(f"{metric} {margin}" for metric, margin in FAR_BELOW_HGB.items())
    blocks: list = [
        ("h2", "Sanity checks"),
        (
            "p",
            "Each model against the reference roles fitted on the same split (same seed, same training rows): "
            "linear (logistic or ridge regression) and hgb (HistGradientBoosting early-stopped on the same "
            f"validation split). Flagged: a student below the linear reference by more than compare's noise floor "
            f"({floors}); a teacher far below hgb ({far}: about three times the seed-to-seed spread of their "
            "paired difference); a model that diverged. The results tables mark them next to their numbers.",
        ),
    ]
    if not refs:
        blocks.append(("p", "No reference model finished in this run: only divergence is checked."))
    if rows:
        rows.sort(key=lambda row: (str(row[0]), row[1], row[2], role_sort_key(row[3])))
        blocks.append(
            Table(
                "sanity", ["dataset", "framework", "seed", "role", "flag", "value", "reference", "metric", "why"], rows
            )
        )
    else:
        blocks.append(("p", "No model is flagged."))
    return blocks
