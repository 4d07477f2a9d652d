"""mypy over the `distillbench` package, reported against the files of this checkout.

The package's folders sit where the design puts them (src/distillbench, implementations/, datasets/,
benchmarks/) and pyproject's `package-dir` maps them under `distillbench`, a mapping mypy cannot
read. This script lays the package out as links under build/typecheck (the folder `mypy_path` names
in pyproject's [tool.mypy]), runs mypy on it with the remaining arguments, and prints mypy's
findings with each link's path replaced by the real file's.

    python tools/typecheck.py [MYPY OPTIONS]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def link_tree() -> dict[str, str]:
    """Build the package's link tree; returns {path in the tree: real path}, both relative to ROOT."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir = pyproject["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(TREE, ignore_errors=True)
    real = {}
    for package, folder in package_dir.items():
        target = TREE.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for entry in (ROOT / folder).iterdir():
            if entry.name != "__pycache__":
                (target / entry.name).symlink_to(entry)
        real[f"{target.relative_to(ROOT)}/"] = f"{folder}/"
    return real


def main(argv: list[str]) -> int:
    real = link_tree()
    done = subprocess.run([sys.executable, "-m", "mypy", *argv], cwd=ROOT, capture_output=True, text=True)
    prefixes = sorted(real, key=len, reverse=True)  # distillbench/benchmarks/ before distillbench/
    for line in done.stdout.splitlines():
        prefix = next((p for p in prefixes if line.startswith(p)), None)
        print(real[prefix] + line[len(prefix) :] if prefix else line)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
