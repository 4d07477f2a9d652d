"""`distillbench datasets ...` as a user runs it: a subprocess, the shared cache named as the source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distillbench.datasets.sources import CACHE_ENV, ENTRY_FILES, SOURCE_ENV, OpenMLCache

pytestmark = pytest.mark.slow


def distillbench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in (CACHE_ENV, SOURCE_ENV)}
    return subprocess.run(
        [sys.executable, "-m", "distillbench.cli", "datasets", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=120,
    )


def test_info_json(openml_source, openml_manifest, tmp_path) -> None:
    result = distillbench("info", "31", "--json", "--openml-source", str(openml_source), "--cache", str(tmp_path))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert {k: info[k] for k in ("dataset_id", "name", "task", "target", "rows", "classes")} == {
        "dataset_id": 31,
        "name": "credit-g",
        "task": "classification",
        "target": "class",
        "rows": 1000,
        "classes": 2,
    }
    assert info["features"] == {"numeric": 7, "categorical": 13} and info["missing_values"] == 0
    assert info["checksum_sha256"] == openml_manifest[31]["sha256"]
    assert info["data_file"] == str(OpenMLCache(tmp_path).entry(31) / "dataset.arff")
    # resolved: ../shared may be reached through a symbolic link
    assert Path(info["source_file"]).resolve() == (openml_source / "org/openml/www/datasets/31/dataset.arff").resolve()


def test_info_text_from_environment(openml_source, tmp_path) -> None:
    result = distillbench("info", "38", env={SOURCE_ENV: str(openml_source), CACHE_ENV: str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "sick" in result.stdout and "dropped 1 column(s) entirely missing: TBG" in result.stdout
    assert (tmp_path / "org/openml/www/datasets/38/dataset.arff").is_file()


def test_list(openml_source, tmp_path) -> None:
    suites = distillbench("list")
    assert suites.returncode == 0 and all(
        name in suites.stdout for name in ("smoke", "quick", "standard", "cc18", "ctr23", "grinsztajn")
    )
    result = distillbench(
        "list", "--suite", "standard", "--json", "--openml-source", str(openml_source), "--cache", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 21 and {row["data"] for row in rows} == {"source"}
    offline = distillbench("list", "--suite", "cc18", "--cache", str(tmp_path))
    assert offline.returncode == 0 and "missing" in offline.stdout


def test_prefetch(openml_source, tmp_path) -> None:
    result = distillbench(
        "prefetch", "--suite", "smoke", "--openml-source", str(openml_source), "--cache", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok ") == 2
    for dataset_id in (61, 531):
        assert all((OpenMLCache(tmp_path).entry(dataset_id) / name).is_file() for name in ENTRY_FILES)


def test_offline_unknown_dataset_is_one_line_and_fast(tmp_path) -> None:
    config = tmp_path / "config" / "openml"
    config.mkdir(parents=True)
    (config / "config").write_text(
        "server = https://openml.invalid/api/v1/xml\n"
    )  # openml.org stand-in that never resolves
    start = time.monotonic()
    result = distillbench(
        "info", "999999", "--cache", str(tmp_path / "cache"), env={"XDG_CONFIG_HOME": str(tmp_path / "config")}
    )
    assert time.monotonic() - start < 30
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("distillbench: error: OpenML dataset 999999 is not in the cache")
    assert "--openml-source" in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["list", "--suite", "nope"], ["info", "61", "--openml-source", "/nonexistent"]])
def test_bad_input_is_one_line(args: list[str]) -> None:
    result = distillbench(*args)
    assert (
        result.returncode == 2 and result.stderr.startswith("distillbench: error: ") and result.stderr.count("\n") == 1
    )


@pytest.mark.parametrize(
    "action, mentions", [([], "prefetch"), (["list"], "--suite"), (["info"], "--json"), (["prefetch"], "--cache")]
)
def test_help(action: list[str], mentions: str) -> None:
    result = distillbench(*action, "--help")
    assert result.returncode == 0 and mentions in result.stdout


def test_importing_the_datasets_layer_loads_no_framework() -> None:
    code = (
        "import sys, distillbench.datasets.commands, distillbench.datasets.prepare; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'openml') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
