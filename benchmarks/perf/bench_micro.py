"""Micro-benchmarks (pytest-benchmark) of the code paths the benchmark times, in each framework:

- forward pass of the teacher and of the student through the backend's serving path
  (``backend.serving_fn``: the same call the harness times), at batch 1 and at a large batch
  (``timing.THROUGHPUT_BATCH`` rows);
- one training step (``backend.trainer``: one Adam step on a mini-batch of ``training.batch_size``
  rows) of the teacher on the labels and of the distilled student on labels + soft targets.

Models have the default config's architectures (``PipelineSpec()``) and the initial weights the
pipeline makes (``pipeline.initial_weights``), on synthetic classification data. Not collected by
the test run (``testpaths = tests``); run them with

    python -m distillbench.benchmarks.perf.micro            # saves the run, compares with the last saved one
    pytest benchmarks/perf/bench_micro.py [pytest-benchmark options]

Both frameworks run in this one process; each gets all cores (``DISTILLBENCH_MICRO_THREADS`` to
change that) and is seeded and made deterministic by its backend's ``configure``. As in the
benchmark's workers, OpenMP threads sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE`` unless set).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (get_backend imports it)

import numpy as np
import pytest

from distillbench.benchmarks.running.timing import THROUGHPUT_BATCH
from distillbench.implementations.compressors import softmax
from distillbench.implementations.frameworks import FRAMEWORKS, get_backend
from distillbench.implementations.pipeline import LossSpec, distill_loss, initial_weights
from distillbench.implementations.spec import PipelineSpec

SPEC = PipelineSpec()
FEATURES, CLASSES = 32, 4
BATCHES = (1, THROUGHPUT_BATCH)
MODELS = ("teacher", "student_kd")  # architectures: the teacher's and the student's (both students share one)
WARMUP_CALLS = 5  # tf.function traces on its first call; the first torch calls allocate


def _threads() -> int:
    return int(os.environ.get("DISTILLBENCH_MICRO_THREADS") or os.cpu_count() or 1)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = max(BATCHES)
    return {
        "x": rng.standard_normal((n, FEATURES)).astype(np.float32),
        "y": rng.integers(0, CLASSES, n).astype(np.int64),
        "t": softmax(rng.standard_normal((n, CLASSES)).astype(np.float32) / SPEC.distill.temperature).astype(
            np.float32
        ),
    }


@pytest.fixture(scope="module", params=list(FRAMEWORKS))
def backend(request):
    backend = get_backend(request.param)
    backend.configure(seed=0, threads=_threads(), device="cpu")
    return backend


def _model(backend, role: str):
    mlp = SPEC.teacher if role == "teacher" else SPEC.student
    return backend.build(mlp, initial_weights(mlp, FEATURES, CLASSES, seed=0, role=role))


def _label(benchmark, backend, role: str, group: str, **extra) -> None:
    benchmark.group = group
    benchmark.extra_info.update(
        framework=backend.name,
        framework_version=backend.version,
        role=role,
        threads=_threads(),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        **extra,
    )


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"batch{b}")
@pytest.mark.parametrize("role", MODELS)
def test_forward(benchmark, backend, data, role, batch) -> None:
    model = _model(backend, role)
    fn, path = backend.serving_fn(model)
    x = np.ascontiguousarray(data["x"][:batch])
    for _ in range(WARMUP_CALLS):
        fn(x)
    _label(
        benchmark,
        backend,
        role,
        f"forward, batch {batch}",
        batch=batch,
        call_path=path,
        n_params=backend.n_params(model),
    )
    out = benchmark(fn, x)
    assert out.shape == (batch, CLASSES)


@pytest.mark.parametrize("role", MODELS)
def test_train_step(benchmark, backend, data, role) -> None:
    model = _model(backend, role)
    loss = LossSpec("classification") if role == "teacher" else distill_loss("classification", SPEC.distill)
    step = backend.trainer(model, loss, SPEC.training).step
    rows = SPEC.training.batch_size
    x, y = np.ascontiguousarray(data["x"][:rows]), np.ascontiguousarray(data["y"][:rows])
    t = None if role == "teacher" else np.ascontiguousarray(data["t"][:rows])
    for _ in range(WARMUP_CALLS):
        step(x, y, t)
    _label(benchmark, backend, role, f"train step, batch {rows}", batch=rows, loss=str(loss))
    before = backend.get_weights(model)[0].copy()
    benchmark(step, x, y, t)
    assert not np.array_equal(before, backend.get_weights(model)[0]), "the step did not change the weights"
