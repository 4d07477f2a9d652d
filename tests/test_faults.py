"""Fault injection: the harness attacked the way a hostile or unlucky user would (issue 17).

Each test breaks something for real (a crafted pickle in the OpenML cache, a truncated file, a
corrupt entry) and asserts what the README's "What survives what" promises: nothing executed,
nothing valid deleted, a one-line message naming the real cause, no traceback, and the rest of the
run going on. Select them with `pytest -m faults`.

Caches are writable copies made from ../shared/openml-cache (never written to); the real openml
package reads them.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from distillbench.datasets.load import load_dataset
from distillbench.datasets.sources import OpenMLCache

pytestmark = pytest.mark.faults


class Payload:
    """A pickle that, when loaded, creates `marker`: proof that code from the cache ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


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
