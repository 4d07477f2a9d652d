"""Fault injection: the harness attacked the way a hostile or unlucky user would (issue 17).

Each test breaks something for real (a crafted pickle in the OpenML cache, a truncated file, a
corrupt entry) and asserts what the README's "What survives what" promises: nothing executed,
nothing valid deleted, a one-line message naming the real cause, no traceback, and the rest of the
run going on. Select them with `pytest -m faults`.

Caches are writable copies made from ../shared/openml-cache (never written to); the real openml
package reads them.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distillbench.datasets.load import load_dataset
from distillbench.datasets.prepare import ARRAYS, get_prepared
from distillbench.datasets.sources import DATASETS_SUBDIR, QUARANTINE, OpenMLCache
from distillbench.errors import UserError

pytestmark = pytest.mark.faults


class Payload:
    """A pickle that, when loaded, creates `marker`: proof that code from the cache ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def copy_source(openml_source: Path, folder: Path, *dataset_ids: int) -> Path:
    """A writable OpenML cache holding copies of the shared cache's entries, to be broken and used as a source."""
    for dataset_id in dataset_ids:
        target = folder / DATASETS_SUBDIR / str(dataset_id)
        shutil.copytree(openml_source / DATASETS_SUBDIR / str(dataset_id), target)
        for path in target.iterdir():
            path.chmod(0o644)
    return folder


def truncate_lines(path: Path, drop: int) -> None:
    """Cut the last `drop` lines: still a well-formed ARFF file, with fewer rows."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-drop]))


def quarantined(cache: OpenMLCache) -> list[Path]:
    return sorted((cache.root / QUARANTINE).glob("*/*"))


@pytest.fixture
def cache(openml_source: Path, tmp_path: Path) -> OpenMLCache:
    return OpenMLCache(tmp_path / "cache", openml_source)


# ---- 1. nothing in the OpenML cache is ever unpickled


def test_a_crafted_pickle_in_the_cache_never_runs(cache, tmp_path, offline) -> None:
    marker = tmp_path / "code-ran"
    cache.fetch(61, metadata=True)
    payload = pickle.dumps(Payload(marker))
    for name in ("dataset.pkl.py3", "features.xml.pkl", "qualities.xml.pkl", "dataset.feather.attributes.pkl.py3"):
        (cache.entry(61) / name).write_bytes(payload)

    dataset = cache.fetch(61, metadata=True)  # features and qualities: openml reads their pickles first
    raw = load_dataset(61, cache=cache)  # the data: openml reads dataset.pkl.py3 whenever it exists
    assert not marker.exists()
    assert (raw.name, len(raw.X)) == ("iris", 150) and len(dataset.features) == 5


def test_a_crafted_pickle_through_the_cli(cache, tmp_path) -> None:
    marker = tmp_path / "code-ran"
    cache.fetch(61)
    (cache.entry(61) / "dataset.pkl.py3").write_bytes(pickle.dumps(Payload(marker)))
    result = subprocess.run(
        [str(Path(sys.executable).with_name("distillbench")), "datasets", "info", "61", "--json",
         "--cache", str(cache.root), "--openml-source", str(cache.source)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert not marker.exists()


# ---- 6. a corrupt cache entry: rebuilt, or that dataset fails with one clear line


@pytest.mark.parametrize("content", [b"garbage", b"\x80\x05\x95", b""], ids=["garbage", "truncated", "empty"])
def test_a_corrupt_openml_pickle_is_ignored(cache, content, offline) -> None:
    load_dataset(61, cache=cache)
    (cache.entry(61) / "dataset.pkl.py3").write_bytes(content)
    assert len(load_dataset(61, cache=cache).X) == 150


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not-an-npz", "pickled-object"])
def test_corrupt_prepared_arrays_are_prepared_again(cache, damage, caplog, offline) -> None:
    first = get_prepared(61, 3, cache=cache)
    (path,) = (cache.root / "distillbench-prepared").glob("61-seed3-*.npz")
    if damage == "garbage":
        path.write_bytes(b"PK\x03\x04 garbage")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "not-an-npz":
        path.write_bytes(b"\x93NUMPY garbage")
    else:  # a well-formed npz whose arrays need unpickling: refused by allow_pickle=False
        np.savez(path, meta=np.array([Payload(path.with_name("code-ran"))], dtype=object))
    with caplog.at_level(logging.WARNING):
        again = get_prepared(61, 3, cache=cache)
    assert f"the prepared arrays {path} do not load" in caplog.text
    assert all(np.array_equal(getattr(again, name), getattr(first, name)) for name in ARRAYS)
    assert not path.with_name("code-ran").exists()
    with np.load(path, allow_pickle=False) as stored:  # written again, sound
        assert np.array_equal(stored["x_train"], first.x_train)


@pytest.mark.parametrize(
    ("file", "content", "problem"),
    [
        ("description.xml", b"not xml", "description.xml is not valid XML"),
        ("description.xml", b"<oml:data_set_description xmlns:oml='http://openml.org/openml'><oml:id>62</oml:id>"
                            b"</oml:data_set_description>", "description.xml is not the description of OpenML dataset 61"),
        ("description.xml", "<a>caf\N{LATIN SMALL LETTER E WITH ACUTE}</a>".encode("latin-1"), "not valid XML"),
        ("features.xml", b"<oml:data_features", "features.xml is not valid XML"),
        ("dataset.arff", None, "dataset.arff has md5"),
    ],
    ids=["description-garbage", "description-of-another", "description-latin1", "features", "arff-truncated"],
)
def test_a_corrupt_copy_is_quarantined_and_copied_again_from_the_source(
    cache, file, content, problem, caplog, offline
) -> None:
    cache.fetch(61, metadata=True)
    if content is None:
        truncate_lines(cache.entry(61) / file, 10)
    else:
        (cache.entry(61) / file).write_bytes(content)
    broken = (cache.entry(61) / file).read_bytes()

    with caplog.at_level(logging.WARNING):
        raw = load_dataset(61, cache=cache)
    assert len(raw.X) == 150 and raw.checksum == load_dataset(61, cache=cache).checksum
    (moved,) = quarantined(cache)
    assert (moved / file).read_bytes() == broken  # moved aside, never deleted
    assert (moved / "dataset.arff").is_file()
    assert problem in caplog.text and f"moved it to {moved}" in caplog.text


def test_a_truncated_data_file_fails_its_dataset_with_one_line(openml_source, tmp_path, offline) -> None:
    source = copy_source(openml_source, tmp_path / "source", 61, 531)
    truncate_lines(source / DATASETS_SUBDIR / "531" / "dataset.arff", 10)  # still parses: 10 rows fewer
    cache = OpenMLCache(tmp_path / "cache", source)

    with pytest.raises(UserError) as error:
        get_prepared(531, 0, cache=cache)
    message = str(error.value)
    (moved,) = quarantined(cache)
    assert "\n" not in message
    assert message.startswith(f"OpenML dataset 531 is corrupt in the source {source / DATASETS_SUBDIR / '531'}: "
                              "dataset.arff has md5 ")
    assert f"moved to {moved}" in message
    assert not cache.entry(531).exists() and not (cache.root / "distillbench-prepared").exists()
    assert len(get_prepared(61, 0, cache=cache).y_test) == 30  # the other dataset is unaffected


def test_a_corrupt_entry_without_a_source(cache, offline) -> None:
    cache.fetch(61)
    alone = OpenMLCache(cache.root)
    (alone.entry(61) / "description.xml").write_text("<oml:data_set_description")
    with pytest.raises(UserError, match=r"^OpenML dataset 61: its cache entry is corrupt \(description.xml is not "
                                        r"valid XML .*\); moved it to .*; fetch it again"):
        load_dataset(61, cache=alone)
    (moved,) = quarantined(alone)
    assert (moved / "dataset.arff").is_file()  # the valid data file is kept


def test_a_run_goes_on_past_a_corrupt_dataset(openml_source, tmp_path) -> None:
    source = copy_source(openml_source, tmp_path / "source", 61, 531)
    truncate_lines(source / DATASETS_SUBDIR / "531" / "dataset.arff", 10)
    config = tmp_path / "tiny.toml"
    config.write_text('name = "tiny"\n[teacher]\nwidths = [8]\n[student]\nwidths = [4]\n'
                      "[training]\nepochs = 2\npatience = 1\n")
    out = tmp_path / "run"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("distillbench")), "run", "--datasets", "61,531", "--frameworks", "torch",
         "--seeds", "1", "--no-deploy", "--config", str(config), "--timing-budget", "0.05",
         "--openml-source", str(source), "--cache", str(tmp_path / "cache"), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "dataset 531 fails its jobs: OpenML dataset 531 is corrupt in the source" in result.stderr
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {(r["dataset_id"], r["status"]) for r in records} == {(61, "ok"), (531, "failed")}
