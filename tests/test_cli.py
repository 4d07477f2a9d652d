"""The command line as a user meets it: every bad value of every command refused where it is read
(exit 2, one line on stderr, no traceback, nothing written), and names read from files (a manifest's
run_id, a suite's name) never used as a path unless they are plain folder names."""

from __future__ import annotations

import json
import os

import pytest

from distillbench.cli import main
from test_compare import make_records, write_run
from test_report import copy_run

CORES = os.cpu_count() or 1

# command line -> what the one line on stderr must say
BAD_VALUES = {
    ("run", "--datasets", ""): "empty: name at least one dataset",
    ("run", "--datasets", ","): "has an empty item",
    ("run", "--datasets", "61,abc"): "expected an OpenML dataset ID",
    ("run", "--datasets", "0"): "expected an OpenML dataset ID",
    ("run", "--datasets", "61,31,61"): "dataset 61 named more than once",
    ("run", "--timing-budget", "nan"): "argument --timing-budget: expected a finite number above 0, not 'nan'",
    ("run", "--timing-budget", "inf"): "argument --timing-budget: expected a finite number above 0",
    ("run", "--timing-budget", "0"): "argument --timing-budget",
    ("run", "--job-timeout", "nan"): "argument --job-timeout: expected a finite number above 0",
    ("run", "--job-timeout", "-5"): "argument --job-timeout",
    ("run", "--threads", str(CORES + 1)): f"--threads {CORES + 1}: more than this machine's {CORES} cores",
    ("run", "--threads", "0"): "argument --threads",
    ("run", "--workers", "1000"): "--workers 1000: more than this machine's",
    ("run", "--frameworks", "torch,torch"): "framework torch named more than once",
    ("run", "--frameworks", "torch,"): "has an empty item",
    ("run", "--frameworks", ""): "empty: name at least one framework",
    ("run", "--frameworks", "jax"): "unknown framework 'jax'",
    ("run", "--out", "/"): "name the folder itself",
    ("run", "--out", "/proc/x"): "is in /proc, a kernel file system",
    ("run", "--out", "/sys/kernel/x"): "is in /sys",
    ("run", "--out", "results/.."): "name the folder itself",
    ("run", "--out", "a\nb"): "name the folder itself",
    ("run", "--seeds", "0"): "argument --seeds: expected a number of seeds from 1 to 1000, not '0'",
    ("run", "--seeds", "-3"): "argument --seeds",
    ("run", "--seeds", "1001"): "argument --seeds",
    ("run", "--seeds", "1e3"): "argument --seeds",
    ("run", "--cache", "/"): "argument --cache: '/': name the folder itself",
    ("report", "--out", "/"): "report: argument --out",
    ("report", "--out", "/dev/x"): "is in /dev",
    ("compare", "a", "b", "--k", "nan"): "argument --k: expected a finite number of at least 0",
    ("compare", "a", "b", "--k", "inf"): "argument --k",
    ("compare", "a", "b", "--timing-threshold", "-1"): "argument --timing-threshold",
    ("compare", "a", "b", "--alpha", "1"): "argument --alpha: expected a probability strictly between 0 and 1",
    ("compare", "a", "b", "--md", "/proc/x.md"): "argument --md",
    ("compare", "a", "b", "--fail-on", "sometimes"): "argument --fail-on: invalid choice",
    ("history", "results", "--out", "/"): "history: argument --out",
    ("baseline", "update", "run", "--baselines", "/proc/b"): "baseline update: argument --baselines",
    ("datasets", "info", "-1"): "datasets info: argument ID",
    ("datasets", "info", "x"): "expected an OpenML dataset ID",
    ("datasets", "list", "--cache", "/sys"): "argument --cache",
    ("parity", "--steps", "0"): "parity: argument --steps",
    ("parity", "--seed", str(2**32)): "argument --seed: expected a seed from 0 to 2^32 - 1",
    ("demo", "--frameworks", "tensorflow,tensorflow"): "framework tensorflow named more than once",
    ("demo", "--rows", "nan"): "demo: argument --rows",
    ("run", "--suite", "smoke", "--datasets", "61"): "not allowed with argument --suite",
    (): "the following arguments are required: COMMAND",
}


@pytest.mark.parametrize("argv", BAD_VALUES, ids=lambda argv: " ".join(argv).replace("\n", "\\n") or "nothing")
def test_a_bad_value_is_one_line_exit_2_and_writes_nothing(argv, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = main(list(argv))
    except SystemExit as exc:  # refused by argparse, through the values' type functions
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    assert out == "" and err.startswith("distillbench: error:") and len(err.splitlines()) == 1, err
    assert BAD_VALUES[argv] in err, err
    assert list(tmp_path.iterdir()) == []


def test_good_values_are_parsed_as_given() -> None:
    from distillbench.cli import build_parser

    args = build_parser().parse_args(["run", "--datasets", " 61, 31 ", "--frameworks", "tensorflow", "--seeds", "2",
                                      "--timing-budget", "0.5", "--out", "results/my-run"])
    assert (args.datasets, args.frameworks, args.seeds, args.timing_budget, args.out) == (
        [61, 31], ["tensorflow"], 2, 0.5, "results/my-run")
    assert build_parser().parse_args(["run"]).frameworks == ["torch", "tensorflow"]  # the default, parsed


# ---- names from files that become paths


@pytest.mark.parametrize("run_id", ["../escaped", "/tmp/absolute", "a/b", "..", "", "line\nbreak", 5, None])
def test_report_refuses_a_run_id_that_is_not_a_plain_folder_name(run_id, tmp_path, monkeypatch, capsys) -> None:
    """`report` writes into reports/<run_id>/: a run_id from the manifest that would leave reports/
    (or is not one line) is refused before anything is written; --out still works."""
    run = copy_run(tmp_path / "runs" / "run", keep=lambda r: r["dataset_id"] == 61 and r["seed"] == 0, run_id=run_id)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distillbench: error:") and "run_id" in err and "not a plain folder name" in err
    assert len(err.splitlines()) == 1, err
    assert list(work.iterdir()) == [] and sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run"]
    assert not os.path.exists("/tmp/absolute")


def test_a_suite_name_that_is_not_a_plain_folder_name_is_refused(tmp_path, monkeypatch, capsys) -> None:
    """A suite's name becomes part of the run's folder (results/<time>-<name>) and a baseline's name."""
    suite = tmp_path / "suite.toml"
    suite.write_text('name = "x/../../../escaped"\ndatasets = [61]\n')
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--suite", str(suite)]) == 2
    err = capsys.readouterr().err
    assert "name 'x/../../../escaped': not a plain folder name" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.toml"]

    records = make_records("run")
    run = write_run(tmp_path / "run", records)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "suite": "../escaped"}))
    assert main(["baseline", "update", str(run), "--baselines", str(tmp_path / "baselines")]) == 2
    assert "suite '../escaped': not a plain folder name" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists()
