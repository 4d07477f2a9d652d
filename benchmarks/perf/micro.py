"""Run the micro-benchmarks (``bench_micro.py``) and compare them with the last saved run:

    python -m distillbench.benchmarks.perf.micro [pytest options]

Every run is saved (``--benchmark-autosave``, under ``.benchmarks/<machine id>/``). When a saved run
exists, this one is compared with the newest (``--benchmark-compare``) and fails when a median is
more than 25% slower (``--benchmark-compare-fail=median:25%``; ``DISTILLBENCH_MICRO_FAIL`` changes
the rule). pytest-benchmark refuses ``--benchmark-compare-fail`` when there is nothing to compare
with (a usage error), so the first run on a machine only saves, and says so.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCH_FILE = Path(__file__).with_name("bench_micro.py")
DEFAULT_FAIL = "median:25%"


def _storage(args: list[str]) -> Path:
    for i, arg in enumerate(args):
        if arg.startswith("--benchmark-storage="):
            value = arg.split("=", 1)[1]
        elif arg == "--benchmark-storage" and i + 1 < len(args):
            value = args[i + 1]
        else:
            continue
        return Path(value.removeprefix("file://"))
    return Path(".benchmarks")


def saved_runs(storage: Path) -> list[Path]:
    from pytest_benchmark.utils import get_machine_id

    return sorted((storage / get_machine_id()).glob("[0-9][0-9][0-9][0-9]_*.json"))


def pytest_args(args: list[str]) -> list[str]:
    out = [str(BENCH_FILE), "--benchmark-autosave", *args]
    if any(a.startswith("--benchmark-compare") for a in args):
        return out  # the caller chose
    saved = saved_runs(_storage(args))
    if saved:
        out[2:2] = [
            "--benchmark-compare",
            f"--benchmark-compare-fail={os.environ.get('DISTILLBENCH_MICRO_FAIL') or DEFAULT_FAIL}",
        ]
        print(f"micro-benchmarks: comparing with {saved[-1]}", file=sys.stderr)
    else:
        print(
            f"micro-benchmarks: no saved run in {_storage(args)}/: this run is saved as the first, "
            "nothing to compare with yet",
            file=sys.stderr,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    import pytest
    from pytest_benchmark.session import PerformanceRegression

    # as the benchmark's workers: OpenMP threads sleep rather than spin (unless set), see runner.worker_env
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        return int(pytest.main(pytest_args(list(sys.argv[1:] if argv is None else argv))))
    except PerformanceRegression:  # raised after the table and the list of regressions are printed
        print("micro-benchmarks: performance has regressed against the saved run (see above)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
