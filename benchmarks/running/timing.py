"""Inference timing the way a serving system calls a model: after warm-up, one row per call for
latency percentiles, and a large batch for throughput. Only the call itself is inside the timed
region; inputs are sliced beforehand."""

from __future__ import annotations

import time

import numpy as np

LATENCY_CALLS = (200, 2000)  # at least / at most; 2000 calls put 20 samples above the p99
THROUGHPUT_BATCH = 4096
WARMUP_CALLS = 50


def single_rows(x: np.ndarray, n: int) -> list[np.ndarray]:
    """n single-row float32 inputs, cycling through the rows of x."""
    return [np.ascontiguousarray(x[i % len(x)][None, :], dtype=np.float32) for i in range(n)]


def latency_samples_us(fn, x: np.ndarray, budget_s: float) -> np.ndarray:
    """Per-call wall time in microseconds of ``fn(row)``, one row at a time: up to 2000 calls, fewer
    (but at least 200) when they take longer than ``budget_s`` in all."""
    lo, hi = LATENCY_CALLS
    rows = single_rows(x, hi)
    for row in rows[:WARMUP_CALLS]:
        fn(row)
    samples = np.empty(hi, dtype=np.int64)
    clock = time.perf_counter_ns
    deadline = clock() + int(budget_s * 1e9)
    n = 0
    for row in rows:
        start = clock()
        fn(row)
        end = clock()
        samples[n] = end - start
        n += 1
        if n >= lo and end > deadline:
            break
    return samples[:n] / 1000.0


def percentiles(samples_us: np.ndarray) -> dict[str, float]:
    p50, p90, p99 = np.percentile(samples_us, [50, 90, 99])
    return {"latency_p50_us": float(p50), "latency_p90_us": float(p90), "latency_p99_us": float(p99)}


def throughput_rows_per_s(fn, x: np.ndarray, budget_s: float) -> float:
    """Rows per second at a batch of THROUGHPUT_BATCH rows (the median over at least 3 calls, more
    while within ``budget_s``)."""
    batch = np.ascontiguousarray(np.resize(x, (THROUGHPUT_BATCH, x.shape[1])), dtype=np.float32)
    fn(batch)
    fn(batch)
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 200):
        start = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - start)
    return THROUGHPUT_BATCH / float(np.median(times))
