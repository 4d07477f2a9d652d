"""Shared fixtures."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from distillbench.datasets.sources import CACHE_ENV, SOURCE_ENV, OpenMLCache

# The offline OpenML cache lives beside the repository (CI gets it read-only): ../shared/openml-cache.
SHARED_OPENML_CACHE = Path(__file__).resolve().parents[2] / "shared" / "openml-cache"


PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture
def offline(monkeypatch) -> None:
    """openml.org cannot be reached from this process: its host names do not resolve."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if "openml" in str(host):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models, with a command running beside the tests: one torch thread each."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _no_cache_settings_from_outside() -> Iterator[None]:
    """Tests name their caches explicitly: the caller's OPENML_CACHE_DIR / DISTILLBENCH_OPENML_SOURCE
    (which .ci/run sets for the benchmark) must not change what a test sees."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(CACHE_ENV, raising=False)
        patch.delenv(SOURCE_ENV, raising=False)
        yield


def _tree_snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its mode, mtime and content hash: equal snapshots mean nothing wrote there."""
    snapshot = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        snapshot[str(path.relative_to(root))] = (stat.st_mode, stat.st_mtime_ns, digest)
    return snapshot


@pytest.fixture(scope="session")
def openml_source() -> Iterator[Path]:
    """The shared offline OpenML cache, to be read only: checked unchanged when the session ends."""
    if not (SHARED_OPENML_CACHE / "MANIFEST.json").is_file():
        pytest.skip(f"no offline OpenML cache at {SHARED_OPENML_CACHE} (../shared/openml-cache beside the repository)")
    before = _tree_snapshot(SHARED_OPENML_CACHE)
    yield SHARED_OPENML_CACHE
    assert _tree_snapshot(SHARED_OPENML_CACHE) == before, f"{SHARED_OPENML_CACHE} was written to"


@pytest.fixture(scope="session")
def tree_snapshot():
    """`tree_snapshot(root)`: every path under root with its mode, mtime and content hash."""
    return _tree_snapshot


@pytest.fixture(scope="session")
def openml_manifest(openml_source: Path) -> dict[int, dict]:
    """The shared cache's MANIFEST.json by dataset ID: name, task, target, rows, sha256 of the data file."""
    return {entry["id"]: entry for entry in json.loads((openml_source / "MANIFEST.json").read_text())}


@pytest.fixture(scope="session")
def openml_cache(openml_source: Path, tmp_path_factory: pytest.TempPathFactory) -> OpenMLCache:
    """A writable OpenML cache for the whole session, each entry copied once from the shared cache on first use."""
    return OpenMLCache(tmp_path_factory.mktemp("openml-cache"), openml_source)
