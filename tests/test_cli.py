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

    args = build_parser().parse_args(
        [
            "run",
            "--datasets",
            " 61, 31 ",
            "--frameworks",
            "tensorflow",
            "--seeds",
            "2",
            "--timing-budget",
            "0.5",
            "--out",
            "results/my-run",
        ]
    )
    assert (args.datasets, args.frameworks, args.seeds, args.timing_budget, args.out) == (
        [61, 31],
        ["tensorflow"],
        [0, 1],
        0.5,
        "results/my-run",
    )
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
    # refused by the manifest's check (run_id: not a string) or as a folder name
    assert err.startswith("distillbench: error:") and "run_id" in err
    assert "not a plain folder name" in err or "not a run manifest" in err
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


# ---- conventions: exit statuses, diagnostics, help (issue 16)


def test_an_internal_error_exits_3_with_its_traceback(tmp_path, monkeypatch, capsys) -> None:
    """A bug is not a verdict: compare's 1 means a regression, so a crash must never exit 1."""
    import distillbench.benchmarks.tracking.compare as compare

    def crash(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(compare, "compare_runs", crash)
    base = write_run(tmp_path / "base", make_records("base"))
    assert main(["compare", str(base), str(base)]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert err.strip().splitlines()[-1] == "distillbench: internal error (the traceback above); exit 3"


def test_verbosity_goes_through_logging(tmp_path, capsys) -> None:
    """-v adds the debug messages, -q keeps warnings and errors, -qq errors only; on any command and
    before or after its name. Results (stdout) do not change."""
    base = write_run(tmp_path / "base", make_records("base"))
    md = str(tmp_path / "c.md")

    def stderr(*argv):
        assert main(list(argv)) == 0
        out, err = capsys.readouterr()
        assert "result: ok" in out
        return err.splitlines()

    default = stderr("compare", str(base), str(base), "--md", md)
    assert default == [f"distillbench compare: note: {base} is compared with itself", f"md: {md}"]
    assert stderr("compare", str(base), str(base), "--md", md, "-q") == default[:1]  # the warning stays
    assert stderr("-qq", "compare", str(base), str(base), "--md", md) == []
    verbose = stderr("compare", "-v", str(base), str(base), "--md", md)
    assert verbose[0].startswith("distillbench 0.1.0, Python ")
    assert verbose[0].endswith(f"compare -v {base} {base} --md {md}")
    assert verbose[1:] == default


def _parsers(parser, prog=""):
    """Every parser of the command tree with its command line."""
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def test_every_help_ends_with_real_examples() -> None:
    """Each command's --help ends with two or three examples, each a command line this parser takes."""
    import shlex

    from distillbench.cli import build_parser

    parsers = list(_parsers(build_parser()))
    # distillbench, run, report, compare, baseline (update), history, datasets (list, info, prefetch), parity, demo, env
    assert len(parsers) >= 13
    for parser in parsers:
        text = parser.format_help()
        tail = text[text.rindex("\nexamples:\n") + len("\nexamples:\n") :].rstrip("\n").splitlines()
        assert 2 <= len(tail) <= 3, (parser.prog, tail)
        for line in tail:
            command = shlex.split(line.split("  # ")[0])
            assert command[0] == "distillbench" and " ".join(command).startswith(parser.prog), (parser.prog, line)
            build_parser().parse_args(command[1:])  # a usage error would exit


@pytest.mark.slow  # a tox process reads tox.ini
def test_tox_runs_its_own_tox_whatever_started_it(tmp_path) -> None:
    """`tox -e bench` and `-e micro` build the tests environment with `{env_python} -m tox`, their own
    copy: nothing needs a `tox` on PATH (before, `tox run` failed without one). Checked with tox's
    own reading of tox.ini, with a PATH that holds no tox."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "tox",
            "config",
            "-c",
            str(root),
            "--workdir",
            str(tmp_path),
            "-e",
            "bench,micro",
            "-k",
            "deps",
            "commands_pre",
            "allowlist_externals",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    sections = shown.stdout.split("[testenv:")[1:]
    assert len(sections) == 2
    for section in sections:
        settings = dict(line.split(" = ", 1) for line in section.splitlines()[1:] if " = " in line)
        env_dir = tmp_path / section.split("]")[0]
        assert settings["commands_pre"].startswith(f"{env_dir / 'bin' / 'python'} -m tox run"), settings
        assert settings["deps"] == "tox==4.67.15"
        assert "tox" not in settings["allowlist_externals"].replace(str(tmp_path), "")
