"""`distillbench history`: the trend of metrics across runs, as a CSV table and a PNG figure.

Synthetic run folders with real record dicts (see test_compare.py); the history of real runs is
checked in test_compare.py on its smoke runs.
"""

from __future__ import annotations

import csv
import time

import pytest

from distillbench.benchmarks.tracking.baseline import update_baseline
from distillbench.benchmarks.tracking.history import find_runs, history_rows, write_history
from distillbench.cli import main
from distillbench.errors import UserError
from test_compare import edit, make_manifest, make_records, write_run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def results(tmp_path):
    """results/ with three runs a day apart on three commits; the last one's distilled student got worse."""
    root = tmp_path / "results"
    day = 86400
    for i, commit in enumerate(("aaaaaaa1111", "bbbbbbb2222", "ccccccc3333")):
        run_id = f"2026010{i + 1}-120000-smoke"
        records = make_records(run_id)
        if i == 2:
            edit(
                records,
                61,
                "torch",
                "student_kd",
                lambda r: r["metrics"].update(accuracy=r["metrics"]["accuracy"] - 0.1),
            )
        manifest = make_manifest(run_id, started=time.time() - (3 - i) * day)
        manifest["environment"]["git"] = {"commit": commit, "dirty": i == 1}
        write_run(root / run_id, records, manifest)
    return root


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_history_of_a_results_folder(results, tmp_path) -> None:
    out = tmp_path / "history"
    (csv_path, png_path), rows = write_history([results], ["accuracy", "latency_p50_us"], out)
    assert png_path.read_bytes()[:8] == PNG and png_path.stat().st_size > 10_000
    table = read_csv(csv_path)
    assert (
        len(table) == len(rows) == 3 * (2 * 3 * 1 + 2 * 2 * 3)
    )  # runs x (iris roles x accuracy + datasets x roles x latency)
    assert [r["commit"] for r in table[:: len(table) // 3]] == ["aaaaaaa1111", "bbbbbbb2222", "ccccccc3333"]
    kd = [
        float(r["mean"])
        for r in table
        if (r["dataset"], r["framework"], r["role"], r["metric"]) == ("iris", "torch", "student_kd", "accuracy")
    ]
    assert kd == pytest.approx([0.89, 0.89, 0.79])
    assert {r["n"] for r in table} == {"3"} and all(float(r["sd"]) > 0 for r in table)


def test_primary_metric_and_default_metrics(results, tmp_path, capsys) -> None:
    rows = history_rows(find_runs([results]), ["primary"])
    assert {(r["dataset"], r["metric"]) for r in rows} == {("iris", "accuracy"), ("boston", "rmse")}
    assert main(["history", str(results), "--out", str(tmp_path / "h")]) == 0
    assert "history of 3 runs" in capsys.readouterr().out
    metrics = {r["metric"] for r in read_csv(tmp_path / "h" / "history.csv")}
    assert metrics == {"accuracy", "rmse", "kd_gain", "latency_p50_us"}


def test_runs_found_twice_count_once_and_single_runs_can_be_named(results, tmp_path) -> None:
    runs = find_runs([results])
    update_baseline(runs[0], baselines=results / "baselines")
    assert len(find_runs([results])) == 3  # results/baselines/ holds no manifest at its top: not a run
    both = find_runs([results, results / "baselines"])
    assert len(both) == 4
    assert len({r["run_id"] for r in history_rows(both, ["accuracy"])}) == 3
    assert len({r["run_id"] for r in history_rows([runs[1]], ["accuracy"])}) == 1


def test_bad_input(results, tmp_path, capsys) -> None:
    with pytest.raises(UserError, match="neither a run folder"):
        find_runs([tmp_path])
    with pytest.raises(UserError, match="no such folder"):
        find_runs([tmp_path / "nowhere"])
    assert main(["history", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("distillbench: error:")
    with pytest.raises(SystemExit) as exc:
        main(["history", str(results), "--metric", "speed"])
    assert exc.value.code == 2
    empty = write_run(tmp_path / "failed-run", [dict(r, status="failed") for r in make_records("x")])
    with pytest.raises(UserError, match="no ok records"):
        write_history([empty], ["accuracy"], tmp_path / "out")
