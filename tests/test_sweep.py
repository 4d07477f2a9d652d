"""Sweeps: a config's [sweep] grids, expanded into configurations that every job runs, kept apart in
the records, the report, compare and the summary; the Pareto fronts and the scaling fit.

The runs are real (the `distillbench` CLI, torch only, the tiny config, --no-deploy, one seed) on the
smoke suite from the offline OpenML cache.
"""

from __future__ import annotations

import json
import math
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib import image

from conftest import command, iris_job, run_command
from distillbench.benchmarks.reporting.figures import pareto_front
from distillbench.benchmarks.reporting.report import SECTIONS, write_report
from distillbench.benchmarks.store.run_folder import latest_records, read_records
from distillbench.benchmarks.tracking.compare import compare_runs
from distillbench.benchmarks.tracking.comparison_text import format_comparison
from distillbench.implementations.pipeline import Data, Pipeline, train_rows
from distillbench.implementations.roles import REFERENCE, ROLES
from distillbench.implementations.spec import ConfigError, PipelineSpec, load_spec, spec_from_dict

TINY = """\
name = "tiny-sweep"

[teacher]
widths = [16]
dropout = 0.1

[student]
widths = [4]

[training]
epochs = 3
patience = 2
"""
GRID_2X2 = (
    TINY
    + """
[sweep]
"distill.temperature" = [2.0, 8.0]
"distill.alpha" = [0.3, 0.7]
"""
)
GRID_SCALING = (
    TINY
    + """
[sweep]
"student.widths" = [[4], [16, 8]]
"training.train_fraction" = [0.25, 0.5, 1.0]
"""
)
SWEEP_KEYS = {"variant", "variant_params", "train_rows", "reused", "reused_from", "teacher_reused"}


def run_smoke(config: Path, source: str | Path, cache: str | Path, out: Path, *args: str, cwd: Path) -> None:
    """`distillbench run` of the smoke suite, torch only (`run_command`), into `out`, with ARGS: it succeeds."""
    run = run_command(
        config, cache, "--suite", "smoke", "--frameworks", "torch", "--out", str(out), *args, source=source
    )
    result = subprocess.run(run, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def sweep_run(tmp: Path, config: str, openml_source: Path, cache: Path) -> SimpleNamespace:
    (tmp / "config.toml").write_text(config)
    out = tmp / "run"
    run_smoke(tmp / "config.toml", openml_source, cache, out, cwd=tmp)
    report = write_report(out, tmp / "report")
    return SimpleNamespace(
        out=out, report=report, records=read_records(out), manifest=json.loads((out / "manifest.json").read_text())
    )


@pytest.fixture(scope="module")
def grid(openml_source, openml_cache, tmp_path_factory) -> SimpleNamespace:
    return sweep_run(tmp_path_factory.mktemp("grid"), GRID_2X2, openml_source, openml_cache.root)


@pytest.fixture(scope="module")
def scaling(openml_source, openml_cache, tmp_path_factory) -> SimpleNamespace:
    return sweep_run(tmp_path_factory.mktemp("scaling"), GRID_SCALING, openml_source, openml_cache.root)


def models(records: list[dict]) -> list[dict]:
    """The records of the configurations' models (not the reference roles, which have no configuration)."""
    return [r for r in records if r["framework"] != REFERENCE]


# ---- the spec


def test_a_2x2_grid_expands_to_4_labelled_configurations_in_the_files_order(tmp_path) -> None:
    (tmp_path / "c.toml").write_text(GRID_2X2)
    spec = load_spec(tmp_path / "c.toml")
    variants = spec.variants()
    assert [v.label for v in variants] == [
        "temperature=2, alpha=0.3",
        "temperature=2, alpha=0.7",
        "temperature=8, alpha=0.3",
        "temperature=8, alpha=0.7",
    ]
    assert variants[1].params == {"distill.temperature": 2.0, "distill.alpha": 0.7}
    assert [(v.spec.distill.temperature, v.spec.distill.alpha) for v in variants] == [
        (2.0, 0.3),
        (2.0, 0.7),
        (8.0, 0.3),
        (8.0, 0.7),
    ]
    assert all(not v.spec.sweep and v.spec.student.widths == [4] for v in variants)
    assert spec_from_dict(spec.to_dict()) == spec  # the config a job carries gives the same grid
    assert [v.label for v in spec_from_dict(spec.to_dict()).variants()] == [v.label for v in variants]


def test_without_a_sweep_there_is_one_unlabelled_configuration_and_the_config_reads_as_before() -> None:
    spec = load_spec("default")
    assert [(v.label, v.params, v.spec) for v in spec.variants()] == [(None, {}, spec)]
    assert "sweep" not in spec.to_dict()


def test_unquoted_dotted_keys_and_ints_for_floats_are_accepted() -> None:
    spec = spec_from_dict({"sweep": {"distill": {"temperature": [2, 8]}, "student.widths": [[16], [64, 32]]}})
    assert spec.sweep == {"distill.temperature": [2.0, 8.0], "student.widths": [[16], [64, 32]]}
    assert [v.label for v in spec.variants()] == [
        "temperature=2, widths=[16]",
        "temperature=2, widths=[64,32]",
        "temperature=8, widths=[16]",
        "temperature=8, widths=[64,32]",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"distill.alpha": [0.3, 2.0]}, 'sweep."distill.alpha"[1]: must be in [0, 1], got 2.0'),
        ({"distill.alhpa": [0.3]}, 'sweep."distill.alhpa": unknown field (known: teacher.widths'),
        ({"name": ["x"]}, 'sweep."name": unknown field'),
        ({"distill.alpha": []}, 'sweep."distill.alpha": must be a non-empty list of values, got []'),
        ({"distill.alpha": 0.5}, 'sweep."distill.alpha": must be a non-empty list of values, got 0.5'),
        ({"distill.alpha": [0.5, 0.5]}, 'sweep."distill.alpha"[1]: 0.5 is listed twice'),
        (
            {"student.widths": [[16], [0]]},
            'sweep."student.widths"[1]: student.widths[0]: must be a positive integer, got 0',
        ),
        ({"training.train_fraction": [0.5, 0.0]}, 'sweep."training.train_fraction"[1]: must be in (0, 1], got 0.0'),
        ({"training.train_fraction": [1.5]}, 'sweep."training.train_fraction"[0]: must be in (0, 1], got 1.5'),
        (
            {"distill.classification_compressor": ["topk", "nope"]},
            "sweep.\"distill.classification_compressor\"[1]: unknown compressor 'nope'",
        ),
        ({"training.epochs": [3, "x"]}, 'sweep."training.epochs"[1]: must be of type int'),
        ({"transfer.kind": ["munge", "smote"]}, "sweep.\"transfer.kind\"[1]: unknown transfer set 'smote'"),
        (
            {"transfer.size": [1, 4]},
            "sweep.\"transfer.size\"[1]: used only by kind 'munge' or 'mixup' or 'gaussian', not 'none'",
        ),
        (
            {"distill.objective": ["soft_targets", "logits"]},
            "sweep.\"distill.objective\"[1]: unknown objective 'logits'",
        ),
    ],
)
def test_bad_grids_are_one_line_errors_naming_the_key(sweep, message, tmp_path) -> None:
    with pytest.raises(ConfigError) as error:
        spec_from_dict({"sweep": sweep})
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    path = tmp_path / "bad.toml"
    path.write_text("[sweep]\n" + "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in sweep.items()))
    result = subprocess.run(
        command("run", "--config", str(path), "--datasets", "61", "--out", str(tmp_path / "run")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(str(error.value)), result.stderr
    assert not (tmp_path / "run").exists()


def test_transfer_sets_and_objectives_are_swept_by_their_paths() -> None:
    sweep = {"transfer.kind": ["munge", "mixup"], "transfer.size": [0, 4], "distill.objective": ["hard_labels"]}
    spec = spec_from_dict({"transfer": {"kind": "munge"}, "sweep": sweep})
    assert [v.label for v in spec.variants()] == [
        "kind=munge, size=0, objective=hard_labels",
        "kind=munge, size=4, objective=hard_labels",
        "kind=mixup, size=0, objective=hard_labels",
        "kind=mixup, size=4, objective=hard_labels",
    ]
    assert [(v.spec.transfer.kind, v.spec.transfer.size) for v in spec.variants()] == [
        ("munge", 0.0),
        ("munge", 4.0),
        ("mixup", 0.0),
        ("mixup", 4.0),
    ]
    # From the default, with no [transfer] table in the config a job carries.
    assert spec_from_dict({"sweep": {"transfer.kind": ["none", "mixup"]}}).variants()[1].spec.transfer.kind == "mixup"


@pytest.mark.parametrize(
    "values",
    [
        [
            float(v) for v in range(1, 10**6 + 1)
        ],  # distinct: minutes to refuse when each was checked against the ones before
        [1.0] * 10**6,  # a duplicate at [1], and a million of them
        [*range(1, 10**6), -1.0],  # an invalid value last
    ],
    ids=["distinct", "duplicates", "invalid-last"],
)
def test_a_huge_grid_is_refused_by_its_size_before_any_value_is_checked(values) -> None:
    with pytest.raises(ConfigError, match=r"^sweep: 1000000 configurations, more than the 256 allowed$"):
        spec_from_dict({"sweep": {"distill.temperature": values}})
    with pytest.raises(ConfigError, match=r"^sweep: 1000000 configurations"):  # a product: 1000 x 1000
        spec_from_dict({"sweep": {"distill.temperature": values[:1000], "distill.alpha": [0.0] * 1000}})


def test_duplicates_are_found_as_the_spec_holds_them() -> None:
    with pytest.raises(ConfigError, match=r'^sweep."distill.temperature"\[2\]: 2 is listed twice$'):
        spec_from_dict({"sweep": {"distill.temperature": [2.0, 3, 2]}})  # 2 and 2.0: one configuration
    with pytest.raises(ConfigError, match=r'^sweep."student.widths"\[1\]: \[16, 8\] is listed twice$'):
        spec_from_dict({"sweep": {"student.widths": [[16, 8], [16, 8]]}})


def test_train_fraction_is_validated_outside_a_sweep_too() -> None:
    with pytest.raises(ConfigError, match=r"^training.train_fraction: must be in \(0, 1\], got 0.0$"):
        spec_from_dict({"training": {"train_fraction": 0.0}})


# ---- the training rows


@pytest.mark.slow
def test_train_rows_are_seeded_nested_and_the_same_in_both_frameworks() -> None:
    from distillbench.implementations.frameworks import get_backend

    a, b = train_rows(1000, 0.3, seed=7), train_rows(1000, 0.3, seed=7)
    assert np.array_equal(a, b) and len(a) == 300 and len(set(a)) == 300 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, train_rows(1000, 0.3, seed=8))
    assert set(train_rows(1000, 0.1, seed=7)) <= set(a)  # nested: a scaling study adds rows, never swaps them
    assert np.array_equal(train_rows(50, 1.0, seed=7), np.arange(50)) and len(train_rows(50, 0.001, seed=7)) == 1

    rng = np.random.default_rng(0)
    data = Data(
        "classification",
        3,
        rng.normal(size=(200, 4)).astype(np.float32),
        rng.integers(0, 3, 200),
        rng.normal(size=(40, 4)).astype(np.float32),
        rng.integers(0, 3, 40),
    )
    spec = spec_from_dict({"training": {"train_fraction": 0.25}})
    pipelines = [Pipeline(get_backend(name), spec, data, seed=3) for name in ("torch", "tensorflow")]
    for p in pipelines:
        assert len(p.data.x_train) == 50 and p.data.x_val is data.x_val
        rows = train_rows(200, 0.25, 3)
        assert np.array_equal(p.data.x_train, data.x_train[rows]) and np.array_equal(p.data.y_train, data.y_train[rows])
    assert np.array_equal(pipelines[0].data.x_train, pipelines[1].data.x_train)
    assert Pipeline(get_backend("torch"), PipelineSpec(), data, seed=3).data is data  # the default: every row


# ---- a run of a 2 x 2 grid


@pytest.mark.slow
def test_every_job_runs_the_4_configurations_with_every_role(grid) -> None:
    records = grid.records
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records if r["status"] != "ok"]
    labels = [v["label"] for v in grid.manifest["variants"]]
    assert labels == [
        "temperature=2, alpha=0.3",
        "temperature=2, alpha=0.7",
        "temperature=8, alpha=0.3",
        "temperature=8, alpha=0.7",
    ]
    assert grid.manifest["sweep_keys"] == ["distill.temperature", "distill.alpha"]
    jobs = {(r["dataset_id"], r["seed"], r["framework"]) for r in records if r["framework"] != REFERENCE}
    assert jobs == {(61, 0, "torch"), (531, 0, "torch")}
    # the reference models: once per (dataset, seed), not per configuration
    assert sorted((r["dataset_id"], r["role"], r.get("variant")) for r in records if r["framework"] == REFERENCE) == [
        (61, "hgb", None),
        (61, "linear", None),
        (531, "hgb", None),
        (531, "linear", None),
    ]
    for job in jobs:
        mine = [r for r in records if (r["dataset_id"], r["seed"], r["framework"]) == job]
        assert sorted((r["variant"], r["role"]) for r in mine) == sorted((v, role) for v in labels for role in ROLES)
        for r in mine:
            params = next(v["params"] for v in grid.manifest["variants"] if v["label"] == r["variant"])
            assert r["variant_params"] == params and r["train_rows"] > 0
    assert len(latest_records(records)) == len(records)  # configurations never overwrite one another


@pytest.mark.slow
def test_the_teacher_and_the_scratch_student_are_trained_once_per_setting(grid) -> None:
    for dataset_id in (61, 531):
        mine = {(r["variant"], r["role"]): r for r in models(grid.records) if r["dataset_id"] == dataset_id}
        first, *others = [v["label"] for v in grid.manifest["variants"]]
        assert mine[(first, "student_kd")]["teacher_reused"] is False and not mine[(first, "teacher")].get("reused")
        for label in others:
            assert mine[(label, "student_kd")]["teacher_reused"] is True
            for role in ("teacher", "student_scratch"):  # the same model, the numbers measured when it was trained
                assert mine[(label, role)]["reused"] is True and mine[(label, role)]["reused_from"] == first
                assert mine[(label, role)]["train_seconds"] == mine[(first, role)]["train_seconds"]
                assert mine[(label, role)]["metrics"] == mine[(first, role)]["metrics"]
            assert not mine[(label, "student_kd")].get("reused")
        # alpha changes the distilled student: the configurations differ where they should
        kd = [mine[(label, "student_kd")]["metrics"] for label in [first, *others]]
        assert kd[0] != kd[1] or dataset_id == 61


@pytest.mark.slow
def test_the_report_has_a_sweep_section_and_the_pareto_figures(grid) -> None:
    md = (grid.report / "report.md").read_text()
    assert "## Sweep" in md and "This run is a sweep of 4 configurations per job" in md
    assert "first configuration (temperature=2, alpha=0.3)" in md
    for name in ("sweep_pareto_params", "sweep_pareto_bytes"):
        assert image.imread(grid.report / "figures" / f"{name}.png").shape[0] > 100
        assert ET.parse(grid.report / "figures" / f"{name}.svg").getroot().tag.endswith("svg")
        assert f"figures/{name}.png" in md
    assert not (grid.report / "figures" / "sweep_scaling.png").exists()
    assert "No training-time scaling figure: this sweep does not vary training.train_fraction." in md
    rows = (grid.report / "tables" / "sweep.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 4  # a row per dataset x framework x configuration
    assert rows[1].startswith('iris,torch,1,"temperature=2, alpha=0.3",accuracy')
    # the main results table holds the first configuration only: one row per dataset and framework
    assert len((grid.report / "tables" / "results.csv").read_text().splitlines()) == 1 + 2


@pytest.mark.slow
def test_the_terminal_summary_keeps_configurations_apart(grid) -> None:
    from distillbench.benchmarks.reporting.summary import summary_rows

    rows = summary_rows(latest_records(grid.records))
    assert len(rows) == 8 and all(row["ok/failed"] == "1/0" for row in rows)
    assert rows[0]["framework"] == "torch (temperature=2, alpha=0.3)"


@pytest.mark.slow
def test_compare_of_a_sweep_run_with_itself_is_clean_and_matches_configuration_to_configuration(grid) -> None:
    comparison = compare_runs(grid.out, grid.out)
    assert comparison.exit_code("all") == 0 and not comparison.jobs
    frameworks = {row.framework for row in comparison.rows}  # the references: once, outside the configurations
    assert frameworks == {f"torch ({v['label']})" for v in grid.manifest["variants"]} | {REFERENCE}
    cells = {(row.dataset_id, row.framework, row.role, row.metric) for row in comparison.rows}
    assert len(cells) == len(comparison.rows)  # one row per cell: no two configurations pooled in one
    assert all(row.baseline == row.candidate and len(row.baseline) == 1 for row in comparison.rows)
    assert "torch (temperature=8, alpha=0.7)" in format_comparison(comparison, "all")


@pytest.mark.slow
def test_a_run_without_a_sweep_keeps_its_records_as_before(grid) -> None:
    fixture = Path(__file__).parent / "data" / "run_small"
    records = read_records(fixture)
    assert not any(SWEEP_KEYS & set(r) for r in records)
    assert len(latest_records(records)) == len(
        {(r["dataset_id"], r["seed"], r["framework"], r["role"]) for r in records}
    )
    assert compare_runs(fixture, fixture).rows  # the committed fixtures still compare
    assert {row.framework for row in compare_runs(fixture, fixture).rows} <= {"torch", "tensorflow"}


@pytest.mark.slow
def test_a_plain_job_has_no_sweep_fields(openml_source, openml_cache, tmp_path) -> None:
    spec = spec_from_dict({"teacher": {"widths": [8]}, "student": {"widths": [4]}, "training": {"epochs": 2}})
    records = iris_job(spec, openml_source, openml_cache)
    assert [r["role"] for r in records] == list(ROLES) and all(r["status"] == "ok" for r in records)
    assert not any(SWEEP_KEYS & set(r) for r in records)


# ---- a run varying the training rows


@pytest.mark.slow
def test_a_sweep_of_the_training_rows_writes_the_log_log_figure_and_finite_slopes(scaling) -> None:
    assert all(r["status"] == "ok" for r in scaling.records)
    rows = {
        (r["dataset_id"], r["variant_params"]["training.train_fraction"]): r["train_rows"]
        for r in models(scaling.records)
    }
    assert rows[(61, 0.25)] < rows[(61, 0.5)] < rows[(61, 1.0)]
    assert len(scaling.manifest["variants"]) == 6
    md = (scaling.report / "report.md").read_text()
    assert "figures/sweep_scaling.png" in md and "slope" in md
    assert image.imread(scaling.report / "figures" / "sweep_scaling.png").shape[0] > 100
    table = (scaling.report / "tables" / "sweep_scaling.csv").read_text().splitlines()
    assert table[0] == "dataset,framework,role,points,rows min,rows max,slope log(time)/log(rows),R^2"
    assert len(table) == 1 + 2 * 3  # per dataset and role (one framework)
    for line in table[1:]:
        cells = line.split(",")
        assert int(cells[3]) >= 3 and math.isfinite(float(cells[6]))
    # the teacher is trained once per fraction (3 per dataset), the students once per configuration
    teachers = [r for r in scaling.records if r["role"] == "teacher" and not r.get("reused")]
    assert len(teachers) == 2 * 3
    for name in SECTIONS["sweep"].figures:
        assert (scaling.report / "figures" / f"{name}.svg").is_file()


def test_the_pareto_front_respects_the_metrics_direction() -> None:
    points = [(1, 0.5), (2, 0.7), (2, 0.6), (3, 0.65), (4, 0.9), (1, 0.4)]
    assert pareto_front(points, higher_is_better=True) == [0, 1, 4]
    assert pareto_front([(1, 5.0), (2, 3.0), (3, 4.0), (4, 1.0)], higher_is_better=False) == [0, 1, 3]
    assert pareto_front([(10, 1.0), (10, 1.0)], higher_is_better=True) == [0]


@pytest.mark.slow
def test_a_failing_configuration_leaves_the_others_standing(openml_source, openml_cache) -> None:
    # a temperature so small that the soft targets are not finite: that configuration fails
    spec = spec_from_dict(
        {
            "teacher": {"widths": [8]},
            "student": {"widths": [4]},
            "training": {"epochs": 2},
            "sweep": {"distill.temperature": [4.0, 5e-324]},
        }
    )
    records = iris_job(spec, openml_source, openml_cache)
    by_variant = {}
    for r in records:
        by_variant.setdefault(r["variant"], []).append(r)
    assert list(by_variant) == ["temperature=4", "temperature=4.94066e-324"]
    assert [r["status"] for r in by_variant["temperature=4"]] == ["ok"] * 3
    failed = by_variant["temperature=4.94066e-324"]
    assert [r["role"] for r in failed] == list(ROLES) and all(r["status"] == "failed" for r in failed)
    assert all(r["error"] and "\n" not in r["error"] for r in failed), failed[0]["error"]


@pytest.mark.slow
def test_a_configuration_that_failed_is_named_in_the_report_and_rerun_by_resume(grid, tmp_path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(grid.out, run)
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    for r in records:
        if r["dataset_id"] == 61 and r.get("variant") == "temperature=2, alpha=0.7":
            r.update(status="failed", error="TrainingDiverged: boom")
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / ".lock").unlink(missing_ok=True)
    report = write_report(run, tmp_path / "report")
    failed = (report / "tables" / "failed.csv").read_text()
    assert "temperature=2, alpha=0.7: TrainingDiverged: boom" in failed
    sweep_rows = (report / "tables" / "sweep.csv").read_text().splitlines()
    assert len(sweep_rows) == 1 + 2 * 4 - 1  # the failed configuration has no results, the others stand
    # --resume re-runs the job with a failed configuration, all of it, and only that job
    manifest = json.loads((run / "manifest.json").read_text())
    recorded = manifest["command"]
    source, cache = (recorded[recorded.index(option) + 1] for option in ("--openml-source", "--cache"))
    run_smoke(grid.out.parent / "config.toml", source, cache, run, "--resume", cwd=tmp_path)
    after = read_records(run)
    assert len(after) == len(records) + 4 * 3
    assert {(r["dataset_id"], r["variant"]) for r in after[len(records) :]} == {
        (61, v["label"]) for v in manifest["variants"]
    }
    assert all(r["status"] == "ok" for r in latest_records(after))
