"""The offline fallback: scikit-learn's bundled datasets written as an OpenML cache, read by the real
openml package, and `distillbench run --fallback-suite builtin` when openml.org cannot be reached.

The only stand-in is openml.org itself, made unreachable by making its host names fail to resolve:
in this process with a monkeypatch, in the CLI's processes with a sitecustomize module on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import openml
import pytest
import sklearn
from sklearn import datasets as skdatasets

from conftest import PROXY_VARIABLES, run_command
from distillbench.benchmarks.running.fallback import suite_fallback
from distillbench.datasets.builtin import (
    BUILTINS,
    BUNDLED,
    FOLDER,
    PRIVATE_ID_START,
    dataset_source,
    ensure_builtin_source,
    write_builtin_source,
)
from distillbench.datasets.load import load_dataset
from distillbench.datasets.prepare import get_prepared
from distillbench.datasets.sources import CACHE_ENV, DATASETS_SUBDIR, ENTRY_FILES, SOURCE_ENV, OpenMLCache
from distillbench.datasets.suites import load_suite
from distillbench.implementations.roles import REFERENCES, ROLES

TINY_CONFIG = "[teacher]\nwidths = [16]\n\n[student]\nwidths = [4]\n\n[training]\nepochs = 3\n"
OFFLINE_SITECUSTOMIZE = '''\
"""Test stand-in: openml.org cannot be reached, its host names do not resolve."""
import socket

_resolve = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    if "openml" in str(host):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return _resolve(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo
'''
SKLEARN_DATA = {
    "breast_cancer": skdatasets.load_breast_cancer,
    "digits": skdatasets.load_digits,
    "diabetes": lambda: skdatasets.load_diabetes(scaled=False),
}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- the generated cache


def test_ids_are_private_and_the_suite_lists_them() -> None:
    assert all(b.dataset_id >= PRIVATE_ID_START for b in BUILTINS)
    assert [e.dataset_id for e in load_suite("builtin").entries] == [b.dataset_id for b in BUILTINS]
    assert {dataset_source(b.dataset_id) for b in BUILTINS[:3]} == {BUNDLED}
    assert dataset_source(BUILTINS[3].dataset_id).startswith("synthetic") and dataset_source(61) == "openml"


@pytest.mark.slow
def test_every_entry_loads_through_openml_and_prepares(tmp_path, offline) -> None:
    cache = OpenMLCache(tmp_path / "cache")  # no source: builtin IDs come from the builtin folder
    tasks = []
    for builtin in BUILTINS:
        assert cache.status(builtin.dataset_id) == "source"
        # The real openml package, all four files (features and qualities included), no network.
        dataset = cache.fetch(builtin.dataset_id, metadata=True)
        assert dataset.name == builtin.name and dataset.default_target_attribute == builtin.target
        assert f"scikit-learn {sklearn.__version__}" in dataset.description and builtin.call in dataset.description
        assert "not OpenML dataset" in dataset.description
        assert int(dataset.qualities["NumberOfInstances"]) == len(dataset.get_data()[0])

        raw = load_dataset(builtin.dataset_id, cache=cache)
        assert (
            raw.source_file == tmp_path / "cache" / FOLDER / DATASETS_SUBDIR / str(builtin.dataset_id) / "dataset.arff"
        )
        assert raw.categorical == [] and not raw.notes
        if builtin.name in SKLEARN_DATA:  # exactly scikit-learn's numbers, labels and class order
            bunch = SKLEARN_DATA[builtin.name]()
            np.testing.assert_array_equal(raw.X.to_numpy(dtype=np.float64), bunch.data)
            if raw.task == "classification":
                assert raw.class_names == [str(c) for c in bunch.target_names]
                np.testing.assert_array_equal(raw.y.cat.codes.to_numpy(), bunch.target)
            else:
                np.testing.assert_array_equal(raw.y.to_numpy(), bunch.target)
        else:
            x, y = skdatasets.make_friedman1(n_samples=1000, n_features=10, noise=1.0, random_state=0)
            np.testing.assert_array_equal(raw.X.to_numpy(dtype=np.float64), x)
            np.testing.assert_array_equal(raw.y.to_numpy(), y)

        prepared = get_prepared(builtin.dataset_id, 0, cache=cache)
        rows = len(raw.y)
        assert len(prepared.y_train) + len(prepared.y_val) + len(prepared.y_test) == rows
        assert prepared.x_train.dtype == np.float32 and np.isfinite(prepared.x_train).all()
        assert prepared.n_classes == raw.n_classes
        tasks.append(raw.task)
    assert tasks == ["classification", "classification", "regression", "regression"]

    # The folder also works as an ordinary --openml-source.
    folder = tmp_path / "cache" / FOLDER
    other = OpenMLCache.resolve(tmp_path / "other", folder)
    assert load_dataset(BUILTINS[1].dataset_id, cache=other).source_file.is_relative_to(folder)


@pytest.mark.slow
def test_generation_is_deterministic_atomic_and_regenerated_when_missing(tmp_path) -> None:
    write_builtin_source(tmp_path / "here")
    code = (
        "import sys; from pathlib import Path; from distillbench.datasets.builtin import write_builtin_source; "
        "write_builtin_source(Path(sys.argv[1]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "there")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    here = tree_bytes(tmp_path / "here")
    assert here == tree_bytes(tmp_path / "there")
    assert len(here) == 1 + len(BUILTINS) * len(ENTRY_FILES)  # and MANIFEST.json

    root = tmp_path / "cache"
    folder = ensure_builtin_source(root)
    assert folder == root / FOLDER and tree_bytes(folder) == here
    assert sorted(p.name for p in root.iterdir()) == [FOLDER]  # no partial folder left behind
    stamp = (folder / "MANIFEST.json").stat().st_mtime_ns
    assert ensure_builtin_source(root) == folder and (folder / "MANIFEST.json").stat().st_mtime_ns == stamp
    (folder / DATASETS_SUBDIR / str(BUILTINS[0].dataset_id) / "dataset.arff").unlink()
    stale = OpenMLCache(root).entry(BUILTINS[0].dataset_id)  # a copy staged from an older folder
    stale.mkdir(parents=True)
    (stale / "dataset.arff").write_text("stale")
    ensure_builtin_source(root)
    assert tree_bytes(folder) == here and not stale.exists()
    assert sorted(p.name for p in root.iterdir()) == [FOLDER, "org"]


# ---- the fallback decision


def cache_args(cache: Path, source: Path | None = None) -> tuple[str, str | None]:
    """--cache and --openml-source as `distillbench run` passes them."""
    return str(cache), str(source) if source else None


def test_no_fallback_while_a_cache_or_source_holds_the_data(openml_source, tmp_path, offline) -> None:
    builtin = load_suite("builtin")
    assert suite_fallback(load_suite("smoke").entries, "smoke", builtin, *cache_args(tmp_path, openml_source)) is None
    fallback = suite_fallback(load_suite("smoke").entries, "smoke", builtin, *cache_args(tmp_path))
    assert fallback["from"] == "smoke" and fallback["to"] == "builtin" and fallback["requested"] == [61, 531]
    assert fallback["source"] == str(tmp_path / FOLDER) and "cannot be reached" in fallback["reason"]


def test_no_fallback_while_openml_can_be_reached(tmp_path, monkeypatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with socket.create_server(("127.0.0.1", 0)) as server:  # answers connections, as openml.org would
        monkeypatch.setattr(openml.config, "server", f"http://127.0.0.1:{server.getsockname()[1]}/api/v1/xml")
        assert (
            suite_fallback(load_suite("smoke").entries, "smoke", load_suite("builtin"), *cache_args(tmp_path)) is None
        )


# ---- `distillbench run --fallback-suite builtin`, offline, as a user runs it


@pytest.fixture(scope="module")
def fallback_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    tmp = tmp_path_factory.mktemp("fallback")
    (tmp / "offline").mkdir()
    (tmp / "offline" / "sitecustomize.py").write_text(OFFLINE_SITECUSTOMIZE)
    (tmp / "config").mkdir()  # XDG_CONFIG_HOME without an openml config: openml's defaults (openml.org)
    (tmp / "tiny.toml").write_text(TINY_CONFIG)
    env = {k: v for k, v in os.environ.items() if k not in (CACHE_ENV, SOURCE_ENV, *PROXY_VARIABLES)}
    env.update(PYTHONPATH=str(tmp / "offline"), XDG_CONFIG_HOME=str(tmp / "config"))
    out = tmp / "run"
    result = subprocess.run(
        run_command(
            tmp / "tiny.toml",
            tmp / "cache",
            "--suite",
            "smoke",
            "--fallback-suite",
            "builtin",
            "--frameworks",
            "torch",
            "--out",
            str(out),
        ),
        cwd=tmp,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    return result, out


@pytest.mark.slow
def test_offline_run_falls_back_to_the_builtin_suite(fallback_run) -> None:
    result, out = fallback_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    said = [line for line in result.stderr.splitlines() if "running suite builtin" in line]
    assert len(said) == 1, result.stderr
    assert said[0].startswith("distillbench: www.openml.org cannot be reached and no OpenML cache holds suite smoke")
    assert "datasets bundled with scikit-learn" in said[0] and "--openml-source" in said[0] and SOURCE_ENV in said[0]
    assert "note: " in result.stdout and "running suite builtin" in result.stdout  # said again after the table

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["suite"] == "builtin" and manifest["status"] == "complete"
    assert {k: manifest["fallback"][k] for k in ("from", "to", "requested")} == {
        "from": "smoke",
        "to": "builtin",
        "requested": [61, 531],
    }
    assert "www.openml.org cannot be reached" in manifest["fallback"]["reason"]
    assert [d["id"] for d in manifest["datasets"]] == [b.dataset_id for b in BUILTINS]

    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == len(BUILTINS) * (len(ROLES) + len(REFERENCES)) and all(r["status"] == "ok" for r in records)
    assert {r["dataset_id"]: r["dataset_source"] for r in records} == {b.dataset_id: b.origin for b in BUILTINS}
    assert {r["dataset_name"] for r in records} == {b.name for b in BUILTINS}


@pytest.mark.slow
def test_the_report_of_a_fallback_run_labels_its_datasets(fallback_run, tmp_path) -> None:
    result, out = fallback_run
    assert result.returncode == 0, result.stderr[-3000:]
    report = subprocess.run(
        [sys.executable, "-m", "distillbench.cli", "report", str(out), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report.md").read_text()
    assert "builtin" in text and "scikit-learn bundled" in text and "SYNTHETIC" in text  # the suite's notes
