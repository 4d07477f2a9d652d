"""Per-step training cost of the harness against a bare loop (a benchmark that reports numbers).

    python -m distillbench.benchmarks.perf.training_step [--threads 1,2] [--rounds 9]

For the default config's teacher (256-256-128, dropout 0.1, plain cross-entropy) and student (32,
the distillation loss with soft targets), batch 128, on a synthetic 3-class problem of ``--rows``
rows and ``--features`` features, per framework and thread count, in one process each (as the
run's workers, ``OMP_WAIT_POLICY=PASSIVE`` unless set): the cost per optimiser step of

- the harness: ``backend.trainer(...).run`` over each epoch's batches, as ``pipeline.fit`` calls it;
- a bare idiomatic loop of the same model from the same initial weights: torch, batch tensors made
  once before timing and a plain loop of ``zero_grad``, ``backward`` and ``step`` of
  ``torch.optim.Adam`` (default implementation); TensorFlow, the same pre-made batch tensors fed one
  by one to a ``tf.function`` train step (``GradientTape``, ``keras.optimizers.Adam``), with a
  batch dimension of None (no retracing for the last, smaller batch).

Rounds run harness and bare loop in ABBA order (two epochs each); the ratio is the median over
rounds of the within-round ratio, robust to the machine's speed drifting. Also printed: TensorFlow's
harness step against torch's (target <= 1.5x), and the load average, since on a shared machine the
numbers are only as good as it was quiet. Targets: harness <= 1.2x the bare loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

FRAMEWORKS = ("torch", "tensorflow")
MODELS = ("teacher", "student_kd")
TARGET_RATIO, TARGET_TF_TORCH = 1.2, 1.5
N_CLASSES, BATCH, EPOCHS_PER_ROUND = 3, 128, 2


def _loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _problem(rows: int, features: int):
    """Features, labels, soft targets (the default compressor on made-up teacher logits)."""
    import numpy as np

    from distillbench.implementations.compressors import fit_compressor
    from distillbench.implementations.spec import load_spec

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, rows).astype(np.int64)
    logits = 3 * rng.normal(size=(rows, N_CLASSES))
    return (
        x,
        y,
        fit_compressor("classification", load_spec("default").distill, logits, y).apply(logits).astype(np.float32),
    )


def _bare_torch(model, objective, training, x, y, t, batches):
    import torch

    optimizer = torch.optim.Adam(
        model.parameters(), lr=training.learning_rate, betas=(training.beta_1, training.beta_2), eps=training.epsilon
    )
    x, y, t = torch.from_numpy(x), torch.from_numpy(y), None if t is None else torch.from_numpy(t)
    made = [(x[rows], y[rows], None if t is None else t[rows]) for rows in map(torch.from_numpy, batches)]
    model.train()

    def run():
        for xb, yb, tb in made:
            optimizer.zero_grad(set_to_none=True)
            objective(model(xb), yb, tb).backward()
            optimizer.step()

    return run


def _bare_tensorflow(model, objective, training, x, y, t, batches):
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(
        learning_rate=training.learning_rate, beta_1=training.beta_1, beta_2=training.beta_2, epsilon=training.epsilon
    )
    made = [tuple(None if a is None else tf.constant(a[rows]) for a in (x, y, t)) for rows in batches]

    @tf.function(reduce_retracing=True)
    def step(xb, yb, tb):
        with tf.GradientTape() as tape:
            value = objective(model(xb, training=True), yb, tb)
        optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))

    def run():
        for xb, yb, tb in made:
            step(xb, yb, tb)

    return run


def worker(framework: str, threads: int, rows: int, features: int, rounds: int) -> dict:
    import importlib

    from distillbench.implementations.frameworks import get_backend
    from distillbench.implementations.pipeline import LossSpec, batch_order, distill_loss, initial_weights
    from distillbench.implementations.spec import load_spec

    spec = load_spec("default")
    backend = get_backend(framework)
    backend.configure(0, threads)
    objectives = importlib.import_module(type(backend).__module__).loss_fn
    x, y, soft = _problem(rows, features)
    epochs = [batch_order(rows, BATCH, 0, epoch) for epoch in range(1, EPOCHS_PER_ROUND + 1)]
    batches = [b for epoch in epochs for b in epoch]
    bare = _bare_torch if framework == "torch" else _bare_tensorflow
    out: dict[str, Any] = {"framework": framework, "threads": threads, "steps_per_round": len(batches), "models": {}}
    for role in MODELS:
        mlp, loss, t = (
            (spec.teacher, LossSpec("classification"), None)
            if role == "teacher"
            else (spec.student, distill_loss("classification", spec.distill), soft)
        )

        def build(mlp=mlp, role=role):
            return backend.build(mlp, initial_weights(mlp, features, N_CLASSES, 0, role))

        trainer = backend.trainer(build(), loss, spec.training)

        def harness(trainer=trainer, t=t):
            for batch_list in epochs:
                trainer.run(x, y, t, batch_list)

        loop = bare(build(), objectives(loss), spec.training, x, y, t, batches)
        for warm_up in (harness, loop, harness, loop):  # traces, first-call allocations
            warm_up()
        times: dict[Callable, list[float]] = {harness: [], loop: []}
        for i in range(rounds):
            for fn in (harness, loop) if i % 2 == 0 else (loop, harness):
                start = time.perf_counter()
                fn()
                times[fn].append((time.perf_counter() - start) / len(batches) * 1e3)
        out["models"][role] = {"path": trainer.path, "harness_ms": times[harness], "bare_ms": times[loop]}
    return out


def _medians(model: dict) -> tuple[float, float, float]:
    h, b = model["harness_ms"], model["bare_ms"]
    return statistics.median(h), statistics.median(b), statistics.median(x / y for x, y in zip(h, b))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distillbench.benchmarks.perf.training_step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated (default: both)")
    parser.add_argument("--rounds", type=int, default=9, help="ABBA rounds of two epochs each (default 9)")
    parser.add_argument(
        "--rows", type=int, default=2000, help="training rows (default 2000: 16 batches, the last of 80)"
    )
    parser.add_argument("--features", type=int, default=20, help="features (default 20)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    parser.add_argument("--worker", nargs=2, metavar=("FRAMEWORK", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.rows, args.features, args.rounds)))
        return 0
    threads = [int(n) for n in args.threads.split(",")]
    frameworks = args.frameworks.split(",")
    if args.rounds < 1 or min(threads) < 1 or not set(frameworks) <= set(FRAMEWORKS):
        sys.exit(f"training_step: --rounds and --threads must be at least 1, --frameworks of {', '.join(FRAMEWORKS)}")
    print(f"load average before: {_loadavg()}  (cores: {os.cpu_count()})", flush=True)
    results = []
    for n in threads:
        for framework in frameworks:  # one process each: TensorFlow takes its threads before its first op
            env = {
                **os.environ,
                "OMP_NUM_THREADS": str(n),
                "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
            }
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    __spec__.name,
                    "--worker",
                    framework,
                    str(n),
                    "--rows",
                    str(args.rows),
                    "--features",
                    str(args.features),
                    "--rounds",
                    str(args.rounds),
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                sys.exit(f"training_step: the {framework} worker failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.splitlines()[-1]))
    print(
        f"per optimiser step, batch {BATCH}, {args.rows} rows x {args.features} features, "
        f"medians of {args.rounds} rounds:"
    )
    print(f"  {'framework':<11}{'threads':>7}  {'model':<11}{'harness ms':>11}{'bare ms':>9}{'ratio':>7}  harness path")
    for result in results:
        for role, model in result["models"].items():
            h, b, ratio = _medians(model)
            model.update(harness_ms_median=h, bare_ms_median=b, ratio=ratio)
            print(
                f"  {result['framework']:<11}{result['threads']:>7}  {role:<11}"
                f"{h:>11.3f}{b:>9.3f}{ratio:>7.2f}  {model['path']}"
            )
    worst = max(m["ratio"] for r in results for m in r["models"].values())
    print(
        f"  worst harness / bare ratio {worst:.2f} (target <= {TARGET_RATIO}): "
        f"{'ok' if worst <= TARGET_RATIO else 'OVER TARGET'}"
    )
    by = {(r["framework"], r["threads"], role): m for r in results for role, m in r["models"].items()}
    for n in threads:
        for role in MODELS:
            if ("torch", n, role) in by and ("tensorflow", n, role) in by:
                ratio = by["tensorflow", n, role]["harness_ms_median"] / by["torch", n, role]["harness_ms_median"]
                print(
                    f"  TensorFlow / torch harness step, {role}, {n} thread(s): "
                    f"{ratio:.2f} (target <= {TARGET_TF_TORCH})"
                )
    print(f"load average after: {_loadavg()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"rows": args.rows, "features": args.features, "rounds": args.rounds, "results": results}, fh, indent=1
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
