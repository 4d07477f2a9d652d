"""Loading through the real openml package, on a writable copy of ../shared/openml-cache, and preparation.

The only stand-in is openml.org itself: offline tests make its name unresolvable, and one points
openml at a local server that answers as openml.org does for an unknown ID.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import openml
import pytest

from conftest import PROXY_VARIABLES
from distillbench.datasets.load import load_dataset
from distillbench.datasets.prepare import ARRAYS, PrepSettings, get_prepared, prepare
from distillbench.datasets.sources import ENTRY_FILES, OpenMLCache
from distillbench.datasets.suites import load_suite
from distillbench.errors import UserError


def write_entry(cache: OpenMLCache, dataset_id: int, name: str, arff: str) -> None:
    """A made-up OpenML cache entry: a description (default target `class`) and an ARFF file."""
    entry = cache.entry(dataset_id)
    entry.mkdir(parents=True)
    (entry / "description.xml").write_text(
        f"""<oml:data_set_description xmlns:oml="http://openml.org/openml">
  <oml:id>{dataset_id}</oml:id><oml:name>{name}</oml:name><oml:version>1</oml:version>
  <oml:format>ARFF</oml:format><oml:url>https://www.openml.org/data/download/{dataset_id}/toy.arff</oml:url>
  <oml:default_target_attribute>class</oml:default_target_attribute>
</oml:data_set_description>
"""
    )
    (entry / "dataset.arff").write_text(arff)


def toy_arff(rows: list[str]) -> str:
    attributes = ["a numeric", "empty numeric", "colour {red,green,blue}", "class {x,y}"]
    return "\n".join(["@relation toy", *(f"@attribute {a}" for a in attributes), "@data", *rows]) + "\n"


# ---- the 21 datasets of the shared cache


@pytest.mark.slow
@pytest.mark.parametrize("dataset_id", [entry.dataset_id for entry in load_suite("standard").entries])
def test_every_shared_dataset_loads_and_prepares(
    openml_cache: OpenMLCache, openml_manifest: dict, dataset_id: int
) -> None:
    meta = openml_manifest[dataset_id]
    raw = load_dataset(dataset_id, cache=openml_cache)
    assert (raw.name, raw.task, raw.target, len(raw.X)) == (meta["name"], meta["task"], meta["target"], meta["rows"])
    assert raw.checksum == meta["sha256"]
    assert raw.source_file == openml_cache.source_entry(dataset_id) / "dataset.arff"
    assert raw.target not in raw.X.columns

    p = prepare(raw, seed=0)
    assert (p.dataset_id, p.task, p.checksum) == (dataset_id, meta["task"], meta["sha256"])
    assert len(p.y_train) + len(p.y_val) + len(p.y_test) == meta["rows"]
    assert all(abs(len(y) - 0.2 * meta["rows"]) <= 1 for y in (p.y_val, p.y_test))
    for name in ("x_train", "x_val", "x_test"):
        x = getattr(p, name)
        assert x.dtype == np.float32 and x.ndim == 2 and x.flags.c_contiguous and np.isfinite(x).all()
        assert x.shape[1] == len(p.feature_names)
    assert np.allclose(p.x_train[:, : raw.X.shape[1] - len(raw.categorical)].mean(axis=0), 0, atol=1e-4)
    if p.task == "classification":
        assert p.n_classes == len(p.class_names) >= 2 and (p.y_mean, p.y_std) == (0.0, 1.0)
        for y in (p.y_train, p.y_val, p.y_test):
            assert y.dtype == np.int64 and y.min() >= 0 and y.max() < p.n_classes
        assert set(p.y_train) == set(range(p.n_classes))
    else:
        assert p.n_classes == 0 and p.class_names == []
        assert all(y.dtype == np.float32 and y.ndim == 1 for y in (p.y_train, p.y_val, p.y_test))
        assert p.y_train.mean() == pytest.approx(0, abs=1e-5) and p.y_train.std() == pytest.approx(1, abs=1e-5)
        restored = np.concatenate([p.unstandardise(y) for y in (p.y_train, p.y_val, p.y_test)])
        assert np.allclose(np.sort(restored), np.sort(raw.y.to_numpy()), rtol=1e-6, atol=1e-5 * p.y_std)


def test_categorical_features_are_one_hot(openml_cache: OpenMLCache) -> None:
    raw = load_dataset(31, cache=openml_cache)  # credit-g
    assert len(raw.categorical) == 13 and "checking_status" in raw.categorical
    p = prepare(raw, seed=0)
    onehot = [i for i, name in enumerate(p.feature_names) if name.startswith("checking_status=")]
    assert len(onehot) == 4
    assert set(np.unique(p.x_train[:, onehot])) == {0.0, 1.0} and (p.x_train[:, onehot].sum(axis=1) == 1).all()
    # The groups the prepared data names: one per categorical column, its columns by name, each one-hot.
    assert len(p.onehot_groups) == 13 and onehot in p.onehot_groups
    for group in p.onehot_groups:
        column = p.feature_names[group[0]].split("=")[0]
        assert group == [i for i, name in enumerate(p.feature_names) if name.split("=")[0] == column]
        assert (p.x_train[:, group].sum(axis=1) == 1).all()
    grouped = {i for group in p.onehot_groups for i in group}
    assert grouped == set(range(7, 61)) and len(grouped) == sum(len(g) for g in p.onehot_groups)
    for _ in range(2):  # written to the cache, then read back from it
        assert get_prepared(31, 0, cache=openml_cache).onehot_groups == p.onehot_groups


def test_cardinality_cap_groups_rare_levels(openml_cache: OpenMLCache) -> None:
    p = prepare(load_dataset(46, cache=openml_cache), seed=0, settings=PrepSettings(max_categories=3))
    per_column: dict[str, int] = {}
    for name in p.feature_names:
        column = name.split("=")[0]
        per_column[column] = per_column.get(column, 0) + 1
    assert len(per_column) == 60 and max(per_column.values()) == 3
    assert sorted(len(group) for group in p.onehot_groups) == sorted(per_column.values())
    assert any(name.endswith("=infrequent_sklearn") for name in p.feature_names)


def test_missing_values_and_an_entirely_missing_column(openml_cache: OpenMLCache) -> None:
    raw = load_dataset(38, cache=openml_cache)  # sick: 6,064 missing values, TBG never measured
    assert raw.X.isna().sum().sum() > 0 and "TBG" not in raw.X.columns
    assert raw.notes == ["dropped 1 column(s) entirely missing: TBG"]
    p = prepare(raw, seed=0)
    assert np.isfinite(p.x_train).all() and np.isfinite(p.x_test).all() and p.notes == raw.notes


def test_row_id_column_is_dropped(openml_cache: OpenMLCache) -> None:
    raw = load_dataset(46, cache=openml_cache)  # splice: row_id_attribute Instance_name
    assert "Instance_name" not in raw.X.columns and raw.X.shape[1] == 60 and len(raw.categorical) == 60


def test_target_that_is_not_the_last_column(openml_cache: OpenMLCache) -> None:
    raw = load_dataset(187, cache=openml_cache)  # wine: the target is the first column
    assert raw.target == "class" and raw.n_classes == 3 and raw.X.columns[0] == "Alcohol"
    assert list(raw.y.cat.categories) == ["1", "2", "3"]


def test_target_override_picks_the_task_from_its_type(openml_cache: OpenMLCache) -> None:
    raw = load_dataset(187, target="Alcohol", cache=openml_cache)
    assert raw.task == "regression" and "class" in raw.categorical and "Alcohol" not in raw.X.columns


def test_preparation_is_deterministic_and_seeded(openml_cache: OpenMLCache) -> None:
    first, again = prepare(load_dataset(31, cache=openml_cache), 3), prepare(load_dataset(31, cache=openml_cache), 3)
    other_seed = prepare(load_dataset(31, cache=openml_cache), 4)
    for name in ARRAYS:
        assert getattr(first, name).tobytes() == getattr(again, name).tobytes()
    assert first.x_test.tobytes() != other_seed.x_test.tobytes()


def test_splits_are_stratified(openml_cache: OpenMLCache) -> None:
    p = prepare(load_dataset(37, cache=openml_cache), 0)  # diabetes, 65/35
    shares = [np.mean(y == 1) for y in (p.y_train, p.y_val, p.y_test)]
    assert max(shares) - min(shares) < 0.01


def test_regression_targets_are_standardised_on_the_training_split(openml_cache: OpenMLCache) -> None:
    raw = load_dataset(531, cache=openml_cache)  # boston
    p = prepare(raw, 0)
    train = p.unstandardise(p.y_train)
    assert (train.mean(), train.std()) == (pytest.approx(p.y_mean), pytest.approx(p.y_std))
    assert p.y_mean != pytest.approx(raw.y.mean(), abs=1e-6)  # the training rows', not all rows'


@pytest.mark.slow
def test_prepared_arrays_are_cached_per_seed_and_settings(openml_source: Path, tmp_path: Path) -> None:
    # A cache of its own: the session's cache may already hold iris's seed 7 (tests/test_api.py runs it).
    openml_cache = OpenMLCache(tmp_path / "cache", openml_source)

    def stored() -> set:
        return set((openml_cache.root / "distillbench-prepared").glob("61-*.npz"))

    before = stored()
    fresh = prepare(load_dataset(61, cache=openml_cache), 7)
    first = get_prepared(61, 7, cache=openml_cache)
    written = stored() - before
    cached = get_prepared(61, 7, cache=openml_cache)
    assert len(written) == 1 and stored() - before == written
    for name in ARRAYS:
        assert getattr(cached, name).tobytes() == getattr(first, name).tobytes() == getattr(fresh, name).tobytes()
        assert getattr(cached, name).dtype == getattr(fresh, name).dtype
    assert (cached.feature_names, cached.class_names, cached.notes) == (fresh.feature_names, fresh.class_names, [])
    get_prepared(61, 8, cache=openml_cache)
    get_prepared(61, 7, cache=openml_cache, settings=PrepSettings(val_fraction=0.1))
    assert len(stored() - before) == 3

    # A hit needs neither openml nor the source: what the harness's worker processes rely on.
    hit = (
        "import sys; from pathlib import Path; from distillbench.datasets.prepare import get_prepared; "
        "from distillbench.datasets.sources import OpenMLCache; "
        f"p = get_prepared(61, 7, cache=OpenMLCache(Path({str(openml_cache.root)!r}))); "
        "print(p.x_train.tobytes().hex() if 'openml' not in sys.modules else 'openml imported')"
    )
    result = subprocess.run([sys.executable, "-c", hit], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == fresh.x_train.tobytes().hex(), result.stderr


def test_bad_settings() -> None:
    with pytest.raises(UserError, match="fractions"):
        PrepSettings(val_fraction=0.5, test_fraction=0.5)


# ---- bad input: one-line UserErrors naming the dataset


def test_file_that_does_not_parse(tmp_path) -> None:
    cache = OpenMLCache(tmp_path)
    write_entry(
        cache, 900001, "broken", "@relation r\n@attribute a numeric\n@attribute class {x,y}\n@data\n1,x\noops,y,3\n"
    )
    with pytest.raises(
        UserError, match=r"dataset 900001 \(broken\): the data file .* does not parse: Bad @DATA instance"
    ):
        load_dataset(900001, cache=cache)


def test_target_override_that_is_not_a_column(tmp_path) -> None:
    cache = OpenMLCache(tmp_path)
    write_entry(cache, 900002, "toy", toy_arff(["1,?,red,x", "2,?,blue,y"]))
    with pytest.raises(
        UserError,
        match=r"dataset 900002 \(toy\): the target 'nope' is not a column \(columns: a, empty, colour, class\)",
    ):
        load_dataset(900002, target="nope", cache=cache)


def test_target_with_one_class(tmp_path) -> None:
    cache = OpenMLCache(tmp_path)
    write_entry(cache, 900003, "one-class", toy_arff([f"{i},?,red,x" for i in range(10)]))  # declares x and y, uses x
    with pytest.raises(
        UserError, match=r"dataset 900003 \(one-class\): the target 'class' has fewer than 2 classes \(x\)"
    ):
        load_dataset(900003, cache=cache)


def test_entirely_missing_column_is_dropped_and_logged(tmp_path, caplog) -> None:
    cache = OpenMLCache(tmp_path)
    rows = [f"{i},?,{['red', 'green', '?'][i % 3]},{'xy'[i % 2]}" for i in range(30)] + ["99,?,blue,y", "5,?,red,?"]
    write_entry(cache, 900004, "toy", toy_arff(rows))
    with caplog.at_level(logging.WARNING):
        raw = load_dataset(900004, cache=cache)
    assert "empty" not in raw.X.columns and raw.categorical == ["colour"] and len(raw.X) == 31
    assert raw.notes == ["dropped 1 rows without a target", "dropped 1 column(s) entirely missing: empty"]
    assert "dataset 900004 (toy): dropped 1 column(s) entirely missing: empty" in caplog.text
    p = prepare(raw, 0)
    assert p.feature_names[0] == "a" and all(name.startswith("colour=") for name in p.feature_names[1:])
    assert np.isfinite(p.x_train).all() and p.n_classes == 2


def test_class_too_small_to_stratify(tmp_path) -> None:
    cache = OpenMLCache(tmp_path)
    write_entry(cache, 900005, "rare", toy_arff([f"{i},?,red,x" for i in range(20)] + ["20,?,blue,y"]))
    p = prepare(load_dataset(900005, cache=cache), 0)
    assert p.notes[-1] == "a class is too small to stratify on: the splits are not stratified"


def test_offline_without_cache_fails_fast(tmp_path, offline) -> None:
    start = time.monotonic()
    with pytest.raises(
        UserError,
        match=r"OpenML dataset 31 is not in the cache .*, and www.openml.org cannot be reached .*--openml-source",
    ):
        load_dataset(31, cache=OpenMLCache(tmp_path))
    assert time.monotonic() - start < 10


@pytest.fixture
def openml_org_stand_in(monkeypatch) -> None:
    """A local server answering every request as openml.org answers for an unknown dataset ID."""

    class UnknownDataset(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (
                b'<oml:error xmlns:oml="http://openml.org/openml">'
                b"<oml:code>111</oml:code><oml:message>Unknown dataset</oml:message></oml:error>"
            )
            self.send_response(412)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), UnknownDataset)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(openml.config, "server", f"http://127.0.0.1:{server.server_port}/api/v1/xml")
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
    server.shutdown()
    server.server_close()


def test_unknown_id(tmp_path, openml_org_stand_in) -> None:
    cache = OpenMLCache(tmp_path)
    with pytest.raises(UserError, match=r"^OpenML dataset 999999: Unknown dataset \(OpenML error 111\)$"):
        load_dataset(999999, cache=cache)
    with pytest.raises(UserError, match="not an OpenML dataset ID"):
        load_dataset(0, cache=cache)


# ---- the shared cache is only read


def test_source_is_never_written(openml_source, tree_snapshot, tmp_path, offline) -> None:
    before = tree_snapshot(openml_source)
    cache = OpenMLCache(tmp_path / "cache", openml_source)
    cache.fetch(61, metadata=True)
    assert sorted(path.name for path in cache.entry(61).iterdir() if path.name in ENTRY_FILES) == sorted(ENTRY_FILES)
    get_prepared(61, 0, cache=cache)  # openml pickles the parsed data next to the copy
    # A corrupt copy is moved aside and copied again (tests/test_faults.py): the source is only read.
    (cache.entry(61) / "description.xml").write_text("not xml")
    assert load_dataset(61, cache=cache).name == "iris"
    assert tree_snapshot(openml_source) == before
