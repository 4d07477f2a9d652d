"""Provenance: the machine, the code and the package versions a result came from (`distillbench env`)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "distillbench",
    "torch",
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "numpy",
    "pandas",
    "openml",
    "scikit-learn",
    "scipy",
    "matplotlib",
    "pyarrow",
    "dask",
    "distributed",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "tf2onnx",
)
_REPO = Path(__file__).resolve().parents[2]  # src/distillbench/env.py -> the checkout


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What identifies the machine for timing comparisons (same kind of machine = same dict)."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "arch": platform.machine(), "os": platform.system()}


def _checkout() -> Path | None:
    """The distillbench source checkout: where this package lives (a development install), else the
    current directory when it is one (tox installs a wheel and runs in the checkout)."""
    for path in (_REPO, Path.cwd()):
        pyproject = path / "pyproject.toml"
        if pyproject.is_file() and 'name = "distillbench"' in pyproject.read_text():
            return path
    return None


def git_state() -> dict:
    """The code commit and whether tracked files differ from it (None when not in a git checkout)."""
    path = _checkout()
    if path is None:
        return {"commit": None, "dirty": None}

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit, "dirty": dirty}


def environment() -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "machine": machine(),
        "packages": package_versions(),
        "git": git_state(),
    }


ENV_EXAMPLES = """\
examples:
  distillbench env  # what this machine's runs are stamped with
  distillbench env -v  # and, first, the version and Python of distillbench itself
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "env",
        epilog=ENV_EXAMPLES,
        help="print the machine, code commit and package versions that results are stamped with",
        description="Print, as JSON, the provenance every run records in its manifest: Python and package "
        "versions, CPU model and cores, OS, host name, and the git commit with a dirty flag.",
    )
    parser.set_defaults(func=lambda args: print(json.dumps(environment(), indent=1)) or 0)
