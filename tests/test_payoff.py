"""Where distillation pays off: the gap closed and its noise floor, the report's rule for a gap to
close, the ranking of configurations, and the records a job writes with a transfer set."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import iris_job
from distillbench.benchmarks.reporting.payoff import _gap, rank_configurations
from distillbench.benchmarks.reporting.stats import Estimate
from distillbench.benchmarks.running import metrics
from distillbench.implementations.spec import spec_from_dict

# ---- the gap closed of one job


@pytest.mark.parametrize(
    ("metric", "teacher", "scratch", "kd", "closed"),
    [
        ("accuracy", 0.9, 0.8, 0.85, 50.0),  # higher is better
        ("accuracy", 0.9, 0.8, 0.95, 150.0),  # better than the teacher
        ("accuracy", 0.9, 0.8, 0.7, -100.0),  # worse than scratch
        ("rmse", 1.0, 2.0, 1.5, 50.0),  # lower is better: the same share
        ("rmse", 1.0, 2.0, 2.5, -50.0),
    ],
)
def test_gap_closed_is_the_share_of_the_teachers_lead_whatever_the_direction(metric, teacher, scratch, kd, closed):
    out = metrics.gap_closed(kd, scratch, teacher, metric, noise=0.01)
    assert out["gap"] == pytest.approx(abs(teacher - scratch)) and out["gap_noise"] == 0.01
    assert out["gap_closed"] == pytest.approx(closed)


@pytest.mark.parametrize(
    ("metric", "teacher", "scratch"), [("accuracy", 0.8, 0.9), ("rmse", 2.0, 1.0), ("accuracy", 0.85, 0.8)]
)
def test_no_gap_closed_where_the_teacher_does_not_lead_by_more_than_the_noise(metric, teacher, scratch):
    out = metrics.gap_closed(0.9, scratch, teacher, metric, noise=0.1)
    assert out["gap_closed"] is None and out["gap"] == pytest.approx(
        teacher - scratch if metric == "accuracy" else scratch - teacher
    )


def test_the_noise_of_an_accuracy_difference_is_that_of_the_paired_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    right_a, right_b = rng.random(400) < 0.8, rng.random(400) < 0.7
    probs = [np.eye(3)[np.where(right, y, (y + 1) % 3)] for right in (right_a, right_b)]
    rows = right_a.astype(float) - right_b
    expected = 1.959964 * rows.std(ddof=1) / np.sqrt(400)
    assert metrics.difference_noise("classification", y, *probs) == pytest.approx(expected, rel=1e-6)
    assert metrics.difference_noise("classification", y, probs[0], probs[0]) == 0.0  # the same model: no noise


def test_the_noise_of_an_rmse_difference_matches_the_bootstrap_over_test_rows():
    rng = np.random.default_rng(1)
    y = rng.normal(size=500)
    a, b = y + 0.5 * rng.normal(size=500), y + 0.3 * rng.normal(size=500) + 0.2 * rng.normal(size=500)

    def rmse(p, rows):
        return np.sqrt(np.mean((p[rows] - y[rows]) ** 2))

    draws = [rng.integers(0, 500, 500) for _ in range(3000)]
    spread = np.std([rmse(a, rows) - rmse(b, rows) for rows in draws])
    assert metrics.difference_noise("regression", y, a, b) == pytest.approx(1.959964 * spread, rel=0.1)


# ---- the report's rule over seeds


def entry(metric: str, teacher, scratch, kd, recorded=None) -> dict:
    def records(values, gap_closed=None):
        return {seed: {"metrics": {metric: v}, "gap_closed": gap_closed} for seed, v in enumerate(values)}

    return {
        "metric": metric,
        "higher_is_better": metric == "accuracy",
        "by_seed": {
            "teacher": records(teacher),
            "student_kd": records(kd, recorded),
            "student_scratch": records(scratch),
        },
    }


def test_a_lead_beyond_the_seed_noise_is_a_gap_to_close():
    gap = _gap(entry("accuracy", [0.90, 0.91, 0.92], [0.80, 0.80, 0.81], [0.85, 0.86, 0.85]))
    assert gap["present"] and gap["gap"].mean == pytest.approx(np.mean([0.1, 0.11, 0.11]))
    assert gap["closed"].mean == pytest.approx(np.mean([50.0, 600 / 11, 400 / 11]))
    assert gap["closed"].half is not None and gap["closed"].n == 3
    rmse = _gap(entry("rmse", [1.0, 1.1, 1.0], [2.0, 2.1, 2.1], [1.5, 1.6, 1.55]))
    assert rmse["present"] and rmse["gap"].mean > 0 and rmse["closed"].mean == pytest.approx(50.0)


def test_a_lead_within_the_seed_noise_is_no_gap_to_close():
    gap = _gap(entry("accuracy", [0.90, 0.70, 0.85], [0.80, 0.80, 0.81], [0.85, 0.86, 0.85]))
    assert gap["gap"].low < 0 and not gap["present"] and gap["closed"] is None


def test_with_one_seed_the_jobs_own_noise_decides():
    assert _gap(entry("accuracy", [0.9], [0.8], [0.85], recorded=50.0))["present"]
    assert not _gap(entry("accuracy", [0.9], [0.8], [0.85], recorded=None))["present"]


def test_configurations_are_ranked_per_framework_over_datasets():
    def e(dataset_id, number, quality, higher=True, framework="torch"):
        return {
            "dataset_id": dataset_id,
            "number": number,
            "framework": framework,
            "higher_is_better": higher,
            "quality": {"student_kd": Estimate(quality, None, 1)},
        }

    entries = [
        e(1, 1, 0.8),
        e(1, 2, 0.9),
        e(1, 3, 0.7),
        e(2, 1, 2.0, False),
        e(2, 2, 1.0, False),
        e(2, 3, 3.0, False),
        e(3, 1, 0.5),
        e(3, 2, 0.6),
        e(3, 3, 0.4),
        e(4, 1, 0.5),  # dataset 4 incomplete
        e(1, 1, 0.1, framework="tensorflow"),
    ]
    ranking = rank_configurations(entries, "torch")
    assert ranking["numbers"] == [1, 2, 3] and ranking["datasets"] == 3
    assert ranking["mean_ranks"] == [2.0, 1.0, 3.0]  # lower RMSE ranks first, like higher accuracy
    chi2, p = ranking["friedman"]
    assert chi2 == pytest.approx(6.0) and 0 < p < 0.1 and ranking["cd"] > 0


# ---- the records of a job with a transfer set


TINY = {"teacher": {"widths": [16]}, "student": {"widths": [4]}, "training": {"epochs": 3, "patience": 2}}


@pytest.mark.slow
def test_a_transfer_sweep_trains_the_teacher_and_the_scratch_student_once(openml_source, openml_cache):
    records = iris_job(
        spec_from_dict(
            TINY
            | {"transfer": {"kind": "munge"}, "sweep": {"transfer.kind": ["munge", "mixup"], "transfer.size": [0, 2]}}
        ),
        openml_source,
        openml_cache,
    )
    assert all(r["status"] == "ok" for r in records) and len(records) == 12
    by = {(r["variant"], r["role"]): r for r in records}
    labels = ["kind=munge, size=0", "kind=munge, size=2", "kind=mixup, size=0", "kind=mixup, size=2"]
    assert [not by[(label, "teacher")].get("reused") for label in labels] == [True, False, False, False]
    assert [not by[(label, "student_scratch")].get("reused") for label in labels] == [True, False, False, False]
    # The distilled student: once per configuration, a transfer set of size 0 being none.
    assert [not by[(label, "student_kd")].get("reused") for label in labels] == [True, True, False, True]
    assert by[("kind=mixup, size=0", "student_kd")]["reused_from"] == "kind=munge, size=0"
    for label in labels:
        kd = by[(label, "student_kd")]
        if label.endswith("size=0"):
            assert "transfer_kind" not in kd and "transfer_rows" not in kd
        else:
            assert kd["transfer_kind"] == label.split("=")[1].split(",")[0]
            assert kd["labelled_rows"] == 90 and kd["transfer_rows"] == 180  # iris: 60% of 150 rows, and twice that
            assert kd["transfer_generate_seconds"] >= 0 and kd["transfer_label_seconds"] > 0
        t, s, k = (by[(label, role)]["metrics"]["accuracy"] for role in ("teacher", "student_scratch", "student_kd"))
        assert kd["gap"] == pytest.approx(t - s) and kd["gap_noise"] > 0
        assert kd["gap_closed"] == (pytest.approx(100 * (k - s) / (t - s)) if t - s > kd["gap_noise"] else None)


@pytest.mark.slow
def test_unlabeled_rows_go_to_the_distilled_student_and_the_others_see_the_labelled_ones(openml_source, openml_cache):
    records = iris_job(
        spec_from_dict(
            TINY
            | {
                "transfer": {"kind": "unlabeled", "labelled_fraction": 0.5},
                "sweep": {"transfer.labelled_fraction": [0.5, 0.2]},
            }
        ),
        openml_source,
        openml_cache,
    )
    by = {(r["variant"], r["role"]): r for r in records}
    for fraction, labelled in ((0.5, 45), (0.2, 18)):
        label = f"labelled_fraction={fraction:g}"
        assert all(by[(label, role)]["train_rows"] == labelled for role in ("teacher", "student_scratch"))
        kd = by[(label, "student_kd")]
        assert (kd["transfer_kind"], kd["labelled_rows"], kd["transfer_rows"]) == ("unlabeled", labelled, 90 - labelled)
        assert not any(by[(label, role)].get("reused") for role in ("teacher", "student_kd", "student_scratch"))
