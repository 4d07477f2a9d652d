"""Results as a DataFrame (``distillbench.load``, `distillbench export`), the Python API and
``--seeds`` as a list (issue 16, points 1, 2 and 5's seeds).

The fast tests read tests/data/run_small (copied and edited where a test breaks it); the slow ones
make real tiny runs (torch, iris, the tiny config of tests/test_faults.py), kill one by cutting its
records and resume it, and run the same options through the CLI and through ``distillbench.run``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import distillbench as db
from conftest import command
from distillbench.api import command_line
from distillbench.benchmarks.reporting.frame import IDENTITY, TABARENA_COLUMNS, tabarena
from distillbench.benchmarks.store.metric_registry import TEST_METRICS
from distillbench.benchmarks.store.record import record_key
from distillbench.benchmarks.store.run_folder import read_run
from distillbench.cli import build_parser, main
from distillbench.errors import UserError
from test_faults import bench, copy_of, distillbench, finished_args, lines, manifest  # noqa: F401 - bench: a fixture
from test_report import RUN_SMALL, copy_run


def in_process(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def records_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]


# ---- load: one row per latest record, typed, the manifest joined in


def test_load_gives_one_typed_row_per_latest_record() -> None:
    df = db.load(RUN_SMALL)
    run = read_run(RUN_SMALL)
    assert len(df) == len(run.records) == 126
    assert not df.duplicated(["run_id", "dataset_id", "seed", "framework", "variant", "role"]).any()
    assert list(df.columns[: len(IDENTITY)]) == list(IDENTITY)
    assert set(TEST_METRICS) <= set(df.columns) and "metrics" not in df.columns
    assert df["seed"].dtype == "int64" and df["dataset_id"].dtype == "int64" and df["epochs"].dtype == "Int64"
    assert str(df["started"].dtype) == "datetime64[ns, UTC]" and str(df["run_started"].dtype) == "datetime64[ns, UTC]"
    for name in ("run_id", "dataset", "framework", "role", "status", "commit", "version_torch", "machine_cpu"):
        assert isinstance(df[name].dtype, pd.CategoricalDtype), name
    first = run.records[0]
    row = df[
        (df["dataset_id"] == first["dataset_id"])
        & (df["seed"] == first["seed"])
        & (df["framework"] == first["framework"])
        & (df["role"] == first["role"])
    ].iloc[0]
    assert row["accuracy"] == first["metrics"]["accuracy"] and row["n_params"] == first["n_params"]
    assert row["started"] == pd.Timestamp(first["started"], unit="s", tz="UTC")
    assert row["machine_cores"] == first["machine"]["cores"]
    env = run.manifest["environment"]
    assert set(df["commit"]) == {env["git"]["commit"]} and set(df["version_torch"]) == {env["packages"]["torch"]}
    assert set(df["test_rows"].dropna()) == {d["rows"]["test"] for d in run.manifest["datasets"] if "rows" in d}
    failed = df[df["dataset_id"] == 9999]
    assert len(failed) == 18 and set(failed["status"]) == {"failed"} and failed["error"].notna().all()
    # the rows in the run's order: datasets as the manifest lists them, then seeds, frameworks, roles
    assert list(dict.fromkeys(df["dataset_id"])) == [d["id"] for d in run.manifest["datasets"]]
    assert list(df["role"][:3]) == ["teacher", "student_kd", "student_scratch"]


def test_superseded_records_torn_and_damaged_lines_are_read_as_the_harness_reads_them(tmp_path, caplog) -> None:
    run = copy_run(tmp_path / "run")
    written = records_of(run)
    newer = dict(written[0], metrics={**written[0]["metrics"], "accuracy": 0.123})  # a resumed run's later record
    with open(run / "records.jsonl", "a") as fh:
        fh.write(json.dumps(newer) + "\n" + '{"dataset_id": 61, "seed"')  # and a line cut by a kill
    with pytest.raises(ValueError):
        pd.read_json(run / "records.jsonl", lines=True)  # what reading it naively gives
    df = db.load(run)
    assert len(df) == 126
    key = (df["dataset_id"] == 61) & (df["seed"] == 0) & (df["framework"] == "torch") & (df["role"] == "teacher")
    assert list(df.loc[key, "accuracy"]) == [0.123]

    text = (run / "records.jsonl").read_text().splitlines(keepends=True)
    text[5] = "}{ not json\n"  # a damaged line: skipped with a warning, its job then incomplete
    (run / "records.jsonl").write_text("".join(text))
    damaged = record_key(written[5])
    df = db.load(run)
    assert "line 6: not valid JSON" in caplog.text
    assert len(df) == 125
    job = df[(df["dataset_id"] == damaged[0]) & (df["seed"] == damaged[1]) & (df["framework"] == damaged[3])]
    assert set(job["status"]) == {"failed"} and job["error"].str.startswith("incomplete").all()
    with pytest.raises(UserError, match="line 6"):
        db.load(run, skip_damaged=False)


def test_load_reads_a_folder_of_runs_in_the_order_they_started(tmp_path) -> None:
    copy_run(tmp_path / "results" / "b-first", started=1.0e9, run_id="b-first")
    copy_run(tmp_path / "results" / "a-second", started=2.0e9, run_id="a-second")
    df = db.load(tmp_path / "results")
    first, second = str(tmp_path / "results" / "b-first"), str(tmp_path / "results" / "a-second")
    assert len(df) == 2 * 126 and list(dict.fromkeys(df["run_dir"])) == [first, second]
    assert set(db.load([second, first])["run_dir"]) == {first, second}


# ---- the TabArena layout


def test_the_tabarena_layout() -> None:
    df = db.load(RUN_SMALL)
    ta = tabarena(df)
    assert tuple(ta.columns) == TABARENA_COLUMNS
    ok = df[df["status"] == "ok"]
    assert len(ta) == len(ok) == 108 and not ta.duplicated(["method", "task", "fold"]).any()
    assert set(ta["method"]) == {
        f"{f}/{r}" for f in ("torch", "tensorflow") for r in ("teacher", "student_kd", "student_scratch")
    }
    assert set(ta["fold"]) == {0, 1, 2} and "iris" in set(ta["task"])
    iris = ta[(ta["task"] == "iris") & (ta["method"] == "torch/teacher") & (ta["fold"] == 0)].iloc[0]
    source = ok[
        (ok["dataset"] == "iris") & (ok["framework"] == "torch") & (ok["role"] == "teacher") & (ok["seed"] == 0)
    ]
    source = source.iloc[0]
    assert iris["metric"] == "accuracy" and iris["metric_error"] == pytest.approx(1 - source["accuracy"])
    boston = ta[ta["task"] == "boston"]
    assert set(boston["metric"]) == {"rmse"}
    assert list(boston["metric_error"]) == list(ok[ok["dataset"] == "boston"]["rmse"])  # lower is better: as is
    assert (ta["metric_error"] >= 0).all() and ta[["time_train_s", "time_infer_s"]].notna().all().all()
    assert iris["time_train_s"] == source["train_seconds"]
    assert iris["time_infer_s"] == pytest.approx(30 / source["throughput_rows_per_s"])  # iris: 30 test rows


# ---- export


def test_export_round_trips_through_csv_and_parquet(tmp_path, capsys) -> None:
    df = db.load(RUN_SMALL)
    code, _, err = in_process(
        capsys, "export", str(RUN_SMALL), "--format", "parquet", "--out", str(tmp_path / "t.parquet")
    )
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), df)  # every type kept

    assert in_process(capsys, "export", str(RUN_SMALL), "--out", str(tmp_path / "t.csv"))[0] == 0
    back = pd.read_csv(tmp_path / "t.csv", parse_dates=["started", "finished", "run_started"])
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    for name in df.columns:
        ours = df[name].astype("object").where(df[name].notna(), None)
        theirs = back[name].astype("object").where(back[name].notna(), None)
        if pd.api.types.is_numeric_dtype(df[name]) and not pd.api.types.is_bool_dtype(df[name]):
            pd.testing.assert_series_equal(back[name].astype("float64"), df[name].astype("float64"))
        else:
            assert [None if v is None else str(v) for v in theirs] == [None if v is None else str(v) for v in ours], (
                name
            )

    code, out, _ = in_process(capsys, "export", str(RUN_SMALL), "--layout", "tabarena", "--out", "-")
    assert code == 0 and out.splitlines()[0] == ",".join(TABARENA_COLUMNS) and len(out.splitlines()) == 109


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "parquet", "--out", "-"], "--out -: Parquet is not written to standard output"),
        (["--out", "/no/such/folder/t.csv"], "cannot write there (no such folder /no/such/folder)"),
        (["--format", "xlsx", "--out", "t.xlsx"], "argument --format: invalid choice"),
    ],
)
def test_export_refuses_in_one_line(args, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = in_process(capsys, "export", str(RUN_SMALL), *args)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


# ---- --seeds: a count or a list


@pytest.mark.parametrize(
    ("text", "seeds"), [("3", [0, 1, 2]), ("0,3,7", [0, 3, 7]), ("7, 0 ,3", [0, 3, 7]), ("5,", [5]), ("1", [0])]
)
def test_seeds_are_a_count_or_a_list(text, seeds) -> None:
    assert build_parser().parse_args(["run", "--seeds", text]).seeds == seeds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "expected a number of seeds from 1 to 1000, not '0'"),
        ("0,3,3", "seed 3 named more than once"),
        ("0,,3", "has an empty item"),
        ("0,x", "expected a seed from 0 to 2^32 - 1, not 'x'"),
        ("0,-1", "not '-1'"),
        (f"0,{2**32}", "expected a seed from 0 to 2^32 - 1"),
        (",", "empty: name at least one seed"),
    ],
)
def test_a_bad_seed_list_is_one_line_exit_2(text, message, capsys) -> None:
    code, out, err = in_process(capsys, "run", "--seeds", text)
    assert code == 2 and out == "" and err.startswith("distillbench: error: run: argument --seeds:"), err
    assert len(err.splitlines()) == 1 and message in err, err


# ---- the Python API


def test_import_distillbench_stays_light() -> None:
    code = (
        "import sys, distillbench; heavy = [m for m in ('pandas', 'distillbench.api', 'distillbench.cli', 'torch') "
        "if m in sys.modules]; assert not heavy, heavy; assert callable(distillbench.load)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_api_options_are_the_command_line_options() -> None:
    assert command_line(
        "run",
        [],
        {
            "suite": "smoke",
            "seeds": [0, 3, 7],
            "frameworks": ["torch"],
            "deploy": False,
            "timing_budget": 0.05,
            "resume": False,
            "verbose": 1,
        },
    ) == [
        "run",
        "--suite",
        "smoke",
        "--seeds",
        "0,3,7",
        "--frameworks",
        "torch",
        "--no-deploy",
        "--timing-budget",
        "0.05",
        "--verbose",
    ]
    assert command_line("run", [], {"seeds": [5]}) == ["run", "--seeds", "5,"]  # one seed, not a count of 5
    assert command_line("compare", ["a", "-b"], {"floor": ["rmse=2%", "accuracy=0.02"], "unpaired": True}) == [
        "compare",
        "--floor",
        "rmse=2%",
        "--floor",
        "accuracy=0.02",
        "--unpaired",
        "--",
        "a",
        "-b",
    ]
    with pytest.raises(UserError, match=r"^run: argument --seeds: expected a number of seeds from 1 to 1000, not '0'$"):
        db.run(seeds=0)
    with pytest.raises(UserError, match="unknown framework 'jax'"):
        db.run(frameworks=["jax"])
    with pytest.raises(TypeError, match="unexpected keyword argument 'sedes'"):
        db.run(sedes=3)
    with pytest.raises(TypeError, match="strict is for the command line"):
        db.run(strict=True)


def test_report_and_compare_from_python(tmp_path) -> None:
    report = db.report(RUN_SMALL, out=tmp_path / "report")
    assert report.path == tmp_path / "report" and report.markdown == (tmp_path / "report" / "report.md").read_text()
    assert report._repr_markdown_().startswith("# distillbench report: run_small")
    shown = report._repr_html_()
    assert (
        shown.startswith('<iframe sandbox="" srcdoc="&lt;!DOCTYPE html&gt;') and "<table" not in shown
    )  # escaped, framed

    one_seed = copy_run(tmp_path / "one-seed", keep=lambda r: r["seed"] == 0)
    result = db.compare(RUN_SMALL, one_seed, fail_on="quality", floor=["accuracy=0.5"])
    cli = main(
        [
            "compare",
            str(RUN_SMALL),
            str(one_seed),
            "--fail-on",
            "quality",
            "--floor",
            "accuracy=0.5",
            "--json",
            str(tmp_path / "c.json"),
            "--md",
            str(tmp_path / "c.md"),
        ]
    )
    assert result.exit_code == cli == result.as_json["exit_code"] == 1  # run_small's failed jobs: lost in both
    assert result.as_json == json.loads((tmp_path / "c.json").read_text())
    assert result._repr_markdown_() == result.markdown == (tmp_path / "c.md").read_text()
    with pytest.raises(UserError, match=r"no such run folder"):
        db.report(tmp_path / "nothing-here")


# ---- real runs: a list of seeds, killed and resumed, and the API's run against the CLI's
#
# Columns that say when, where and in which invocation a job ran, or what it measured of time: they
# differ between any two runs of the same jobs; so may the code's commit and dirty flag, when the
# checkout changes while the tests run. Everything else (identity, qualities, sizes, the training's
# course, the package versions) must be equal.
MEASURED = (
    "run_dir",
    "commit",
    "dirty",
    "train_seconds",
    "train_cpu_seconds",
    "latency_p50_us",
    "latency_p90_us",
    "latency_p99_us",
    "throughput_rows_per_s",
    "speedup",
    "started",
    "finished",
    "seconds_per_epoch",
    "peak_rss_mb",
    "held_seconds",
    "compress_seconds",
    "measure_seconds",
    "invocation",
    "run_started",
)


def same_results(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    keep = [c for c in a.columns if c not in MEASURED]
    pd.testing.assert_frame_equal(a[keep], b[keep])


@pytest.fixture(scope="module")
def clean(bench, tmp_path_factory) -> Path:  # noqa: F811 - bench: test_faults' fixture
    """A complete tiny run of the seeds 0, 3 and 7 (torch, iris), through the CLI."""
    out = tmp_path_factory.mktemp("clean") / "run"
    result = distillbench(bench.run(out, "--seeds", "0,3,7"))
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_a_seed_list_runs_exactly_those_seeds(clean) -> None:
    assert manifest(clean)["seeds"] == [0, 3, 7]
    jobs = {(r["seed"], r["framework"]) for r in lines(clean)}
    assert jobs == {(s, f) for s in (0, 3, 7) for f in ("reference", "torch")}
    assert set(db.load(clean)["seed"]) == {0, 3, 7}


@pytest.mark.slow
def test_a_killed_and_resumed_run_loads_as_a_clean_one(clean, tmp_path) -> None:
    out = copy_of(clean, tmp_path)
    text = (out / "records.jsonl").read_text().splitlines(keepends=True)
    last_job = [i for i, line in enumerate(text) if '"seed": 7' in line and '"framework": "torch"' in line]
    assert len(last_job) == 3
    # killed while writing seed 7's torch job: one of its records whole, the next one cut mid-line
    (out / "records.jsonl").write_text("".join(text[: last_job[0] + 1]) + text[last_job[1]][:40])
    killed = db.load(out)
    assert set(killed[killed["seed"] == 7]["status"].astype(str)) >= {"failed"}  # incomplete, not ok
    resumed = distillbench(command(*finished_args(clean, out), "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert len(lines(out)) > len(lines(clean))  # the superseded and re-run records are still in the file
    same_results(db.load(out), db.load(clean))
    assert (db.load(out)["invocation"] == 2).sum() == len(text) - last_job[0]  # the records written again


@pytest.mark.slow
def test_the_api_run_writes_the_records_the_cli_writes(clean, tmp_path) -> None:
    args = finished_args(clean, tmp_path)

    def value(flag: str) -> str:
        return args[args.index(flag) + 1]

    out = db.run(
        datasets=[61],
        frameworks=["torch"],
        seeds=[0, 3, 7],
        deploy=False,
        workers=1,
        openml_source=value("--openml-source"),
        cache=value("--cache"),
        config=value("--config"),
        timing_budget=float(value("--timing-budget")),
        out=tmp_path / "api" / "run",
    )
    assert out == tmp_path / "api" / "run"
    assert manifest(out)["command"][:2] == ["distillbench", "run"] and "0,3,7" in manifest(out)["command"]
    same_results(db.load(out), db.load(clean))
    assert sorted(map(record_key, read_run(out).records)) == sorted(map(record_key, read_run(clean).records))


def test_the_api_run_refuses_before_writing(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="--resume needs --out"):
        db.run(datasets=[61], resume=True)
    assert list(tmp_path.iterdir()) == []
