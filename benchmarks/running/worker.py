"""A worker process: runs jobs of one framework, one at a time, for the driver (``runner.py``).

Protocol: the driver writes one JSON job per line to stdin; the worker answers one JSON list of
records per line on its original stdout. Everything else the libraries print goes to stderr (the
run's log), so it cannot corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from distillbench.benchmarks.running.job import Job, run_job


def spawn(log, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "distillbench.benchmarks.running.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver, which ends its workers
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        records = run_job(Job(**json.loads(line)))
        protocol.write(json.dumps(records) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
