"""Shared fixtures."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
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


# A pipeline config whose runs take seconds: tiny models, two epochs.
TINY = 'name = "tiny"\n[teacher]\nwidths = [8]\n[student]\nwidths = [4]\n[training]\nepochs = 2\npatience = 1\n'


def command(*args: str) -> list[str]:
    """`distillbench ARGS`: the installed command beside this Python, else the same entry point through -m."""
    script = Path(sys.executable).with_name("distillbench")
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "distillbench.cli", *args]


def run_command(config: Path, cache: Path, *args: str, source: Path | None = None, deploy: bool = False) -> list[str]:
    """`distillbench run` of the pipeline config `config`, one seed, a short timing budget, the data read
    through the OpenML cache `cache` (filled from the read-only cache `source` where one is given), without
    the deployment formats unless `deploy`; then ARGS (a later option of the same name overrides these)."""
    return command(
        "run",
        *(["--openml-source", str(source)] if source else []),
        "--cache",
        str(cache),
        "--config",
        str(config),
        "--seeds",
        "1",
        "--timing-budget",
        "0.05",
        *([] if deploy else ["--no-deploy"]),
        *args,
    )


def iris_run_command(config: Path, cache: Path, out: Path, *args: str, source: Path, deploy: bool = False) -> list[str]:
    """`run_command` of iris into `out`, torch only, one job at a time, a shorter timing budget; then ARGS."""
    return run_command(
        config,
        cache,
        "--datasets",
        "61",
        "--frameworks",
        "torch",
        "--workers",
        "1",
        "--timing-budget",
        "0.02",
        "--out",
        str(out),
        *args,
        source=source,
        deploy=deploy,
    )


def iris_job(spec, openml_source: Path, openml_cache: OpenMLCache, deploy: bool = False) -> list[dict]:
    """The records of one real job of `spec` (a ``PipelineSpec``) in this process: iris, seed 0, torch, one
    thread, a short timing budget, without the deployment formats unless `deploy`."""
    from distillbench.benchmarks.running.job import Job, run_job

    return run_job(
        Job(
            61,
            0,
            "torch",
            spec.to_dict(),
            threads=1,
            cache=str(openml_cache.root),
            source=str(openml_source),
            timing_budget=0.02,
            deploy=deploy,
        )
    )


def background_command(folder: Path, *args: str) -> Iterator[tuple[subprocess.Popen, Path]]:
    """For a module fixture: `distillbench ARGS` started now, so that it runs beside the module's
    in-process tests (one OpenMP thread). Output goes to files in `folder`: no pipe can fill up."""
    with open(folder / "stdout", "w") as stdout, open(folder / "stderr", "w") as stderr:
        proc = subprocess.Popen(
            command(*args), stdout=stdout, stderr=stderr, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
    yield proc, folder
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def finished(background) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of a command started by `background_command`."""
    proc, folder = background
    returncode = proc.wait(timeout=300)
    return returncode, (folder / "stdout").read_text(), (folder / "stderr").read_text()


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
