"""Cross-validation folds (`run --folds K`): the splits, the jobs, the pairing in `compare` and the
corrected intervals of the report; and the holdout split, unchanged when no --folds is given."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from conftest import TINY, command, iris_run_command
from distillbench.benchmarks.reporting import stats
from distillbench.benchmarks.reporting.aggregate import ratio_test_train, summarize
from distillbench.benchmarks.store.record import job_key, split_key
from distillbench.benchmarks.store.run_folder import read_run
from distillbench.benchmarks.tracking.compare import compare_runs
from distillbench.datasets.load import load_dataset
from distillbench.datasets.prepare import ARRAYS, PrepSettings, Split, _split, get_prepared, prepare

# sha256 of the six arrays (x_train, x_val, x_test, y_train, y_val, y_test) of seed 0's holdout split,
# computed here with the preparation of main before folds existed (commit 1381752): what the holdout
# split must still give, bit for bit.
HOLDOUT_SEED0 = {
    61: "928e2b0132d7403a1830a3d1d79f7434346f3902a6ea52d1a3b51f3e170df3c8",  # iris
    531: "1c1207b32e55a7d1d0ddcea776fb33e09b76fd4d1764c2e630ade62dc99802c1",  # boston
}


def _digest(prepared) -> str:
    digest = hashlib.sha256()
    for name in ARRAYS:
        digest.update(getattr(prepared, name).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("dataset_id", sorted(HOLDOUT_SEED0))
def test_the_holdout_split_is_unchanged(openml_cache, dataset_id: int) -> None:
    prepared = get_prepared(dataset_id, 0, cache=openml_cache)
    assert _digest(prepared) == HOLDOUT_SEED0[dataset_id]
    assert (prepared.fold, prepared.folds) == (None, None)
    # the holdout's cache file keeps its name from before folds: older caches are hits
    names = [p.name for p in (openml_cache.root / "distillbench-prepared").glob(f"{dataset_id}-seed0-*.npz")]
    assert any(re.fullmatch(rf"{dataset_id}-seed0-[0-9a-f]{{20}}\.npz", name) for name in names)


@pytest.mark.parametrize("dataset_id,folds", [(61, 3), (531, 5)])
def test_folds_partition_the_rows_and_validation_never_meets_test(openml_cache, dataset_id: int, folds: int) -> None:
    raw = load_dataset(dataset_id, cache=openml_cache)
    n = len(raw.y)
    for seed in (0, 1):
        tests = []
        for fold in range(folds):
            train, val, test, notes = _split(raw, Split(seed, fold, folds), PrepSettings())
            assert notes == []
            tests.append(test)
            # train, validation and test: disjoint, all the rows
            assert sorted(np.concatenate([train, val, test])) == list(range(n))
            # validation: a quarter of the rest (20/80, as the holdout's 20 % of its 80 %)
            assert abs(len(val) - 0.25 * (n - len(test))) <= 1
        # every row in exactly one test fold per repeat, the folds of equal size (+-1)
        assert sorted(np.concatenate(tests)) == list(range(n))
        assert max(map(len, tests)) - min(map(len, tests)) <= 1
        if raw.task == "classification":  # stratified: each class split evenly over the folds
            codes = raw.y.cat.codes.to_numpy()
            for test in tests:
                for label, count in Counter(codes).items():
                    assert abs(int((codes[test] == label).sum()) - count / folds) < 1
    # another seed, other folds
    assert not np.array_equal(_split(raw, Split(0, 0, folds), PrepSettings())[2], tests[0])


def test_a_fold_is_prepared_and_cached_apart_from_the_holdout(openml_cache) -> None:
    raw = load_dataset(61, cache=openml_cache)
    fresh = prepare(raw, 0, fold=1, folds=3)
    cached = get_prepared(61, 0, cache=openml_cache, fold=1, folds=3)
    again = get_prepared(61, 0, cache=openml_cache, fold=1, folds=3)
    for name in ARRAYS:
        assert getattr(fresh, name).tobytes() == getattr(cached, name).tobytes() == getattr(again, name).tobytes()
    assert (again.fold, again.folds, len(again.y_test)) == (1, 3, 50)
    assert list((openml_cache.root / "distillbench-prepared").glob("61-seed0-fold1of3-*.npz"))
    assert _digest(again) != _digest(get_prepared(61, 0, cache=openml_cache, fold=2, folds=3))


def test_the_corrected_interval_is_wider_by_the_nadeau_bengio_factor() -> None:
    """Four results of overlapping splits, n_test/n_train = 1/2 (3-fold): the variance of the mean is
    s^2 (1/J + 1/2), not s^2 / J: the half-width grows by sqrt((1/4 + 1/2) / (1/4)) = sqrt(3)."""
    values = [0.90, 0.94, 0.91, 0.97]
    naive, corrected = stats.mean_ci(values), stats.mean_ci(values, test_train=0.5)
    s = np.std(values, ddof=1)
    t = scipy_stats.t.ppf(0.975, 3)
    assert naive.half == pytest.approx(t * s / 2)
    assert corrected.half == pytest.approx(t * s * math.sqrt(1 / 4 + 1 / 2))
    assert corrected.half / naive.half == pytest.approx(math.sqrt(3))
    assert corrected.mean == naive.mean
    diff = stats.paired_diff_ci([1.0, 2.0, 4.0], [0.5, 1.0, 2.0], test_train=0.5)
    assert diff.half == pytest.approx(stats.mean_ci([0.5, 1.0, 2.0]).half * math.sqrt((1 / 3 + 1 / 2) * 3))
    manifest = {"folds": 3, "datasets": [{"id": 61, "rows": {"train": 75, "val": 25, "test": 50}}]}
    assert ratio_test_train(manifest, 61) == 0.5
    assert ratio_test_train({"folds": None, "datasets": manifest["datasets"]}, 61) is None
    assert ratio_test_train(manifest, 99) == 0.5  # a dataset that did not load: the folds' sizes


# ---- a tiny real run with --folds 3


@pytest.fixture(scope="module")
def folds_run(openml_source, openml_cache, tmp_path_factory) -> dict:
    """`run --folds 3 --seeds 1` of iris, torch only, tiny models; and its command without --folds."""
    folder = tmp_path_factory.mktemp("folds")
    (folder / "tiny.toml").write_text(TINY)
    run = iris_run_command(folder / "tiny.toml", openml_cache.root, folder / "run", source=openml_source)
    done = subprocess.run([*run, "--folds", "3"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return {"out": folder / "run", "run": run, "stdout": done.stdout}


@pytest.mark.slow
def test_a_run_with_folds_runs_one_job_per_seed_fold_and_framework(folds_run) -> None:
    run = read_run(folds_run["out"])
    expected = {(61, 0, fold, framework) for fold in range(3) for framework in ("reference", "torch")}
    assert {job_key(r) for r in run.records} == expected
    assert run.jobs.ok == expected and not run.jobs.unfinished and not run.jobs.failed
    assert all(r["folds"] == 3 for r in run.records)
    assert run.manifest["folds"] == 3 and run.manifest["seeds"] == [0]
    # each fold's test split is its third of iris: 50 rows, prepared as the job prepared them
    assert run.manifest["datasets"][0]["rows"]["test"] == 50
    # the reference job runs once per (dataset, seed, fold): the teacher's flags are against its own fold
    assert Counter(split_key(r) for r in run.records if r["framework"] == "reference") == {
        (0, fold): 2 for fold in range(3)
    }
    # the report's intervals over the 3 folds are the corrected ones, and it says so
    [entry] = summarize(run.records, run.manifest)
    teacher = [r["metrics"]["accuracy"] for r in entry["by_seed"]["teacher"].values()]
    assert len(teacher) == 3 and entry["test_train"] == 0.5
    assert entry["quality"]["teacher"] == stats.mean_ci(teacher, test_train=0.5)._replace(
        note=entry["quality"]["teacher"].note
    )


@pytest.mark.slow
def test_a_report_of_folds_names_the_correction(folds_run, tmp_path) -> None:
    done = subprocess.run(
        command("report", str(folds_run["out"]), "--out", str(tmp_path / "report")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "corrected resampled t-test's (Nadeau and Bengio 2003)" in text and "3 per seed" in text


@pytest.mark.slow
def test_resume_with_other_folds_is_refused_and_with_the_same_has_nothing_to_do(folds_run) -> None:
    before = (folds_run["out"] / "records.jsonl").read_bytes()
    other = subprocess.run([*folds_run["run"], "--folds", "2", "--resume"], capture_output=True, text=True)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1].startswith("distillbench: error: --resume")
    assert "folds 2, not 3" in other.stderr
    holdout = subprocess.run([*folds_run["run"], "--resume"], capture_output=True, text=True)
    assert holdout.returncode == 2 and "folds none, not 3" in holdout.stderr
    same = subprocess.run([*folds_run["run"], "--folds", "3", "--resume"], capture_output=True, text=True)
    assert same.returncode == 0, same.stderr
    assert "0 jobs (6 already done)" in same.stderr
    assert (folds_run["out"] / "records.jsonl").read_bytes() == before


def _copy_run(source: Path, target: Path, change) -> Path:
    """A copy of a run folder whose records pass through ``change`` (None drops one)."""
    target.mkdir()
    shutil.copy(source / "manifest.json", target / "manifest.json")
    lines = [json.loads(line) for line in (source / "records.jsonl").read_text().splitlines()]
    kept = [changed for r in lines if (changed := change(r)) is not None]
    (target / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    return target


@pytest.mark.slow
def test_compare_pairs_by_seed_and_fold(folds_run, tmp_path) -> None:
    """The candidate's teacher is better by 0.1 x fold on fold k: three pairs (keyed by seed alone,
    the three folds of seed 0 would collapse into one value), compared paired: the mean of the
    per-fold differences (0, 0.1, 0.2) against 2 standard errors of them."""

    def better(r: dict) -> dict:
        if r["role"] == "teacher" and r["status"] == "ok":
            r["metrics"]["accuracy"] -= 0.1 * r["fold"]  # the baseline lower
        return r

    baseline = _copy_run(folds_run["out"], tmp_path / "baseline", better)
    comparison = compare_runs(baseline, folds_run["out"])
    [row] = [r for r in comparison.rows if r.role == "teacher" and r.metric == "accuracy"]
    assert len(row.baseline) == len(row.candidate) == 3
    assert row.change == pytest.approx(0.1)
    assert row.basis == "2 SE paired" and row.threshold == pytest.approx(2 * 0.1 / math.sqrt(3))

    # a fold missing in the candidate is a missing job, named by its fold
    candidate = _copy_run(
        folds_run["out"], tmp_path / "candidate", lambda r: None if (r["framework"], r["fold"]) == ("torch", 2) else r
    )
    comparison = compare_runs(folds_run["out"], candidate)
    assert {(j.seed, j.fold, j.framework, j.status) for j in comparison.jobs} == {(0, 2, "torch", "missing")}


def test_compare_says_when_the_runs_split_the_data_differently() -> None:
    from distillbench.benchmarks.tracking.run_differences import run_notes

    holdout = {"folds": None, "datasets": [{"id": 61}]}
    folds = {"folds": 3, "datasets": [{"id": 61}]}
    task = {"folds": None, "datasets": [{"id": 61, "openml_task": {"id": 59, "repeats": 1, "folds": 10}}]}
    assert [n for n in run_notes(holdout, holdout) if "split" in n] == []
    assert any("(holdout vs 3-fold)" in n for n in run_notes(holdout, folds))
    assert any("(3-fold vs OpenML tasks 59)" in n for n in run_notes(folds, task))
