"""`distillbench parity` and `distillbench demo`."""

from __future__ import annotations

import json
import logging

import numpy as np

from distillbench import validate
from distillbench.implementations.frameworks import FRAMEWORKS
from distillbench.implementations.spec import load_spec, presets

log = logging.getLogger(__name__)
PARITY_EXAMPLES = """\
examples:
  distillbench parity  # both tasks, the default config, 20 Adam steps
  distillbench parity --config residual --steps 50 --per-step
  distillbench parity --task classification --json
"""
DEMO_EXAMPLES = """\
examples:
  distillbench demo --config seed  # the source design's own example
  distillbench demo --task multiclass --frameworks torch --rows 5000
"""


def register(subparsers) -> None:
    parity = subparsers.add_parser(
        "parity",
        epilog=PARITY_EXAMPLES,
        help="check that the PyTorch and TensorFlow implementations compute the same numbers",
        description=(
            "Load identical initial weights (made once in numpy) into both frameworks, compare the forward "
            "pass, then run N identical Adam steps (same batches) and report the largest absolute difference "
            "of outputs, loss and weights, per step, for the teacher, the distilled student and the scratch "
            "student. Synthetic data, no network, a few seconds. Dropout is off (each framework draws its own "
            "masks). Exit 0 when every difference is within tolerance (float32: forward 1e-5, after each "
            "step 1e-4), 1 otherwise."
        ),
    )
    parity.add_argument("--steps", type=validate.positive_int, default=20, help="Adam steps to compare (default 20)")
    parity.add_argument(
        "--task",
        choices=("regression", "classification", "all"),
        default="all",
        help="regression, classification (binary and multi-class) or all (default)",
    )
    parity.add_argument(
        "--config",
        default=None,
        help=f"pipeline config: a TOML file or a preset ({', '.join(presets())}); default: default",
    )
    parity.add_argument("--seed", type=validate.seed, default=0, help="seed for weights, data and batches (default 0)")
    parity.add_argument("--per-step", action="store_true", help="print every step, not only the largest differences")
    parity.add_argument("--json", action="store_true", help="print the full result as JSON")
    parity.set_defaults(func=_parity)

    demo = subparsers.add_parser(
        "demo",
        epilog=DEMO_EXAMPLES,
        help="train teacher, compressor and students once on synthetic data and print what happened",
        description=(
            "The smallest end-to-end case, on synthetic data (no network): fit the teacher, fit the "
            "compressor on its outputs, fit the distilled student on x against the compressed outputs, fit "
            "the same student from scratch, and print test quality, parameters and epochs per framework. "
            "`distillbench demo --config seed` runs the source design's own example."
        ),
    )
    demo.add_argument(
        "--config", default="seed", help=f"a TOML file or a preset ({', '.join(presets())}); default: seed"
    )
    demo.add_argument("--task", choices=("regression", "binary", "multiclass"), default="regression")
    demo.add_argument(
        "--frameworks",
        type=validate.comma_list(FRAMEWORKS, "framework"),
        default=",".join(FRAMEWORKS),
        help="comma-separated, each once (default: all)",
    )
    demo.add_argument(
        "--features", type=validate.positive_int, default=100, help="input features (default 100, as in the source)"
    )
    demo.add_argument("--rows", type=validate.positive_int, default=2000, help="rows of synthetic data (default 2000)")
    demo.add_argument("--seed", type=validate.seed, default=0, help="seed for weights, data and batches (default 0)")
    demo.set_defaults(func=_demo)


def _one_configuration(config, command: str):
    """The config's spec; a sweep's base configuration (its grids left out), said on stderr."""
    spec = load_spec(config)
    if spec.sweep:
        log.warning(
            f"{command}: the config's [sweep] ({len(spec.variants())} configurations) is for "
            f"`distillbench run`; {command} uses its base configuration"
        )
        spec = spec.replace(sweep={})
    return spec


def _parity(args) -> int:
    from distillbench.implementations.parity import run_parity

    result = run_parity(_one_configuration(args.config, "parity"), task=args.task, steps=args.steps, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0 if result["ok"] else 1
    tol = result["tolerance"]
    change = result["rate_change"]
    print(
        f"parity {' vs '.join(result['frameworks'])}: {args.steps} Adam steps, the learning rate set to "
        f"{change['learning_rate']:g} after step {change['after_step']}, float32, "
        f"tolerance forward {tol['forward']:g}, per step {tol['step']:g} (largest absolute differences)"
    )
    print(f"{'task':<11} {'role':<35} {'forward':>9} {'outputs':>9} {'loss':>9} {'weights':>9}  verdict")
    for case in result["cases"]:
        worst = case["max"]
        role = " ".join(
            [
                case["role"],
                *([case["objective"]] if case["objective"] else []),
                *(["+transfer"] if case["transfer"] else []),
            ]
        )
        print(
            f"{case['task']:<11} {role:<35} {case['forward']:9.2e} {worst['outputs']:9.2e} "
            f"{worst['loss']:9.2e} {worst['weights']:9.2e}  {'ok' if case['ok'] else 'FAIL'}"
        )
        if args.per_step:
            for s in case["steps"]:
                print(
                    f"{'':<11} {'  step ' + str(s['step']):<35} {'':>9} {s['outputs']:9.2e} {s['loss']:9.2e} "
                    f"{s['weights']:9.2e}"
                )
    print("parity: ok" if result["ok"] else "parity: FAILED (differences above tolerance)")
    return 0 if result["ok"] else 1


def _demo(args) -> int:
    from distillbench.implementations.frameworks import get_backend
    from distillbench.implementations.parity import synthetic_problem
    from distillbench.implementations.pipeline import Data, Pipeline

    spec = _one_configuration(args.config, "demo")
    task, n_classes, x, y = synthetic_problem(args.task, args.rows, args.features, args.seed)
    cut1, cut2 = int(0.6 * len(x)), int(0.8 * len(x))
    data = Data(task, n_classes, x[:cut1], y[:cut1], x[cut1:cut2], y[cut1:cut2])
    x_test, y_test = x[cut2:], y[cut2:]
    metric = "accuracy" if task == "classification" else "RMSE"
    print(f"demo: config {spec.name!r}, {args.task}, {args.rows} rows x {args.features} features, seed {args.seed}")
    for name in args.frameworks:
        backend = get_backend(name)
        backend.configure(args.seed)
        pipeline = Pipeline(backend, spec, data, args.seed)
        teacher, teacher_fit = pipeline.fit_teacher()
        compressor, t_train, t_val = pipeline.compress(teacher)
        extra = pipeline.transfer_set(teacher, compressor)
        student, student_fit = pipeline.fit_student_kd(t_train, t_val, extra)
        scratch, scratch_fit = pipeline.fit_student_scratch()
        print(
            f"\n[{name}] compressor: {compressor.kind}"
            + (f" (a={compressor.scale:.4f}, b={compressor.offset:.4f})" if compressor.kind == "affine" else "")
            + (f"; transfer set: {extra.kind}, {len(extra.x)} rows" if extra.kind != "none" else "")
        )
        for role, model, fit in (
            ("teacher", teacher, teacher_fit),
            ("student_kd", student, student_fit),
            ("student_scratch", scratch, scratch_fit),
        ):
            pred = pipeline.predict(model, x_test)
            score = (
                np.mean(pred.argmax(1) == y_test)
                if task == "classification"
                else np.sqrt(np.mean((pred - y_test) ** 2))
            )
            print(
                f"  {role:<16} test {metric} {score:.4f}  params {pipeline.serve(model).n_params:>7}  "
                f"epochs {fit.epochs:>3} (best {fit.best_epoch})  "
                f"steps {fit.steps:>5} (best {fit.best_step})  {fit.stop_reason}"
            )
    return 0
