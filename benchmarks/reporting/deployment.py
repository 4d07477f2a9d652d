"""The Deployment section of a report: every model in float32, exported to ONNX and quantised to int8."""

from __future__ import annotations

from collections import defaultdict

from distillbench.benchmarks.reporting import figures, stats
from distillbench.benchmarks.reporting.aggregate import dataset_labels, ratio_test_train, run_order
from distillbench.benchmarks.reporting.blocks import Table, make_figure
from distillbench.benchmarks.running.metrics import ratio as _ratio
from distillbench.benchmarks.running.metrics import retention as _retention
from distillbench.benchmarks.store.record import is_deployment, is_ok, split_key
from distillbench.implementations.roles import FORMATS, ROLES


def deployment_entries(records: list[dict], manifest: dict) -> list[dict]:
    """Per (dataset, framework, model role, format), ``float32`` being the role's own record: its ok
    seeds' numbers (quality mean ± CI, retention vs the float teacher, medians of size, p50 latency
    and throughput; the largest max |diff| and lowest agreement vs the float model over seeds), and
    per dataset the same model's float32 numbers for the ratios. Only models that have a deployment
    record (a run with --no-deploy has none)."""
    labels = dataset_labels(records, manifest)
    datasets, frameworks = run_order(records, manifest)
    deployed = [r for r in records if is_deployment(r)]
    models = {(r["dataset_id"], r["framework"], r["model_role"]) for r in deployed}
    cells = defaultdict(list)  # (dataset, framework, model role, format) -> records
    for r in records:
        if is_deployment(r):
            cells[(r["dataset_id"], r["framework"], r["model_role"], r["format"])].append(r)
        elif (r["dataset_id"], r["framework"], r["role"]) in models:
            cells[(r["dataset_id"], r["framework"], r["role"], "float32")].append(r)
    formats = list(FORMATS) + sorted({r["format"] for r in deployed} - set(FORMATS))
    roles = list(ROLES) + sorted({r["model_role"] for r in deployed} - set(ROLES))
    entries = []
    for dataset_id in datasets:
        for framework in frameworks:
            for role in roles:
                if (dataset_id, framework, role) not in models:
                    continue
                floats = {split_key(r): r for r in cells[(dataset_id, framework, role, "float32")] if is_ok(r)}
                test_train = ratio_test_train(manifest, dataset_id)
                for fmt in formats:
                    rs = cells.get((dataset_id, framework, role, fmt))
                    if not rs:
                        continue
                    ok = [r for r in rs if is_ok(r)]
                    metric = next((r["primary_metric"] for r in rs if r.get("primary_metric")), None)

                    def values(key, records=ok):
                        return [r.get(key) for r in records if r.get(key) is not None]

                    # Against the same model in float32, seed by seed: quality kept (%), size, speed.
                    pairs = [(r, floats[split_key(r)]) for r in ok if split_key(r) in floats]
                    entries.append(
                        {
                            "dataset_id": dataset_id,
                            "label": labels.get(dataset_id, str(dataset_id)),
                            "framework": framework,
                            "role": role,
                            "format": fmt,
                            "metric": metric,
                            "quality": stats.mean_ci([r["metrics"].get(metric) for r in ok], test_train=test_train),
                            "retention": stats.mean_ci(values("retention"), test_train=test_train),
                            "vs_float": stats.mean_ci(
                                [
                                    _retention(r["metrics"][metric], f["metrics"][metric], metric)
                                    for r, f in pairs
                                    if metric is not None
                                    and r["metrics"].get(metric) is not None
                                    and f["metrics"].get(metric) is not None
                                ],
                                test_train=test_train,
                            ),
                            "max_abs_diff": max(values("max_abs_diff"), default=None),
                            "agreement": min(values("agreement"), default=None),
                            "bytes": None if (size := stats.median(values("model_bytes"))) is None else round(size),
                            "size_ratio": stats.median(
                                [_ratio(r.get("model_bytes"), f.get("model_bytes")) for r, f in pairs]
                            ),
                            "latency_p50_us": stats.median(values("latency_p50_us")),
                            "latency_p99_us": stats.median(values("latency_p99_us")),
                            "speedup": stats.median(
                                [_ratio(f.get("latency_p50_us"), r.get("latency_p50_us")) for r, f in pairs]
                            ),
                            "throughput": stats.median(values("throughput_rows_per_s")),
                            "throughput_ratio": stats.median(
                                [
                                    _ratio(r.get("throughput_rows_per_s"), f.get("throughput_rows_per_s"))
                                    for r, f in pairs
                                ]
                            ),
                            "convert_seconds": stats.median(values("convert_seconds")),
                            "tolerance": next(iter(values("tolerance")), None),
                            "seeds": f"{len(ok)}/{len(rs)}",
                            "failed": [r for r in rs if not is_ok(r)],
                        }
                    )
    return entries


def deployment_blocks(records: list[dict], manifest: dict, frameworks: list[str], mixed: bool) -> list:
    """The Deployment section: every model in float32 (the framework's own serving path), exported to
    ONNX (onnxruntime) and quantised to int8, side by side; a summary over datasets; failed formats."""
    from distillbench.implementations.deploy import ONNX_TOLERANCE

    blocks: list = [
        ("h2", "Deployment"),
        (
            "p",
            "Each trained model as it would be deployed: float32 is the framework's own serving path (the numbers "
            "of the sections above); onnx is the model exported to ONNX and run by onnxruntime (torch.onnx / tf2onnx), "
            f"which must reproduce the framework's outputs within {ONNX_TOLERANCE:g} x max(1, max |output|) on the "
            "test split, or its record fails; int8 is post-training quantisation (PyTorch: dynamic quantisation of the "
            "linear layers; TensorFlow: a full-integer TFLite model calibrated on training rows), whose error is what "
            "it costs. Quality: mean ± 95% CI over seeds; retention: % of the float32 teacher's quality; vs float32: "
            "% of the same model's float32 quality (mean over seeds); max |diff|: largest absolute difference of the "
            "outputs (logits or standardised values) from float32 over seeds; agreement: lowest share of test rows "
            "with the same predicted class; bytes: the serialised model (state_dict, .keras, .onnx, .tflite); "
            "latency: median over seeds of the p50 at batch 1; throughput at batch 4096.",
        ),
    ]
    entries = deployment_entries(records, manifest)
    if not entries:
        return blocks + [("p", "No deployment formats in this run (it ran with --no-deploy, or no job finished).")]
    blocks.append(
        Table(
            "deployment",
            [
                "dataset",
                "framework",
                "model",
                "format",
                "metric",
                "quality",
                "retention %",
                "vs float32 %",
                "max |diff|",
                "agreement %",
                "bytes",
                "p50 us",
                "p99 us",
                "rows/s",
                "convert s",
                "seeds",
            ],
            [
                [
                    e["label"],
                    e["framework"],
                    e["role"],
                    e["format"],
                    e["metric"],
                    e["quality"],
                    e["retention"],
                    e["vs_float"],
                    e["max_abs_diff"],
                    None if e["agreement"] is None else 100 * e["agreement"],
                    e["bytes"],
                    e["latency_p50_us"],
                    e["latency_p99_us"],
                    e["throughput"],
                    e["convert_seconds"],
                    e["seeds"],
                ]
                for e in entries
            ],
        )
    )
    summary = []
    for framework in frameworks:
        for role in dict.fromkeys(e["role"] for e in entries):
            for fmt in dict.fromkeys(e["format"] for e in entries):
                es = [e for e in entries if (e["framework"], e["role"], e["format"]) == (framework, role, fmt)]
                if not es or fmt == "float32":
                    continue
                diffs = [e["max_abs_diff"] for e in es if e["max_abs_diff"] is not None]
                agreements = [e["agreement"] for e in es if e["agreement"] is not None]
                summary.append(
                    [
                        framework,
                        role,
                        fmt,
                        len([e for e in es if e["quality"].mean is not None]),
                        stats.median([e["retention"].mean for e in es]),
                        stats.median([e["vs_float"].mean for e in es]),
                        max(diffs, default=None),
                        None if not agreements else 100 * min(agreements),
                        stats.median([e["size_ratio"] for e in es]),
                        stats.median([e["speedup"] for e in es]),
                        stats.median([e["throughput_ratio"] for e in es]),
                        sum(len(e["failed"]) for e in es),
                    ]
                )
    blocks += [
        (
            "p",
            "Over datasets, per framework, model and format: medians of the per-dataset numbers, against the "
            "same model in float32 (size: bytes / float32 bytes; p50 speed-up: float32 p50 / format p50; "
            "throughput: format / float32); the largest max |diff| and the lowest agreement of any dataset.",
        ),
        Table(
            "deployment_summary",
            [
                "framework",
                "model",
                "format",
                "datasets",
                "median retention %",
                "median vs float32 %",
                "max |diff|",
                "min agreement %",
                "size vs float32",
                "p50 speed-up vs float32",
                "throughput vs float32",
                "failed records",
            ],
            summary,
        ),
    ]
    if not mixed:
        points = [e for e in entries if e["latency_p50_us"] and e["bytes"] and e["quality"].mean is not None]
        if points:
            blocks.append(
                make_figure(
                    "deployment",
                    figures.deployment_figure,
                    points,
                    frameworks,
                    list(FORMATS),
                    caption="Each model in each format: p50 latency at batch 1 (left) and size in bytes "
                    "(right) vs quality as % of the float32 teacher's, one point per dataset "
                    "(mean over seeds), lines joining a model's formats",
                )
            )
    failed = defaultdict(list)
    for e in entries:
        for r in e["failed"]:
            failed[(e["label"], e["framework"], r["role"], r.get("error") or "failed (no reason recorded)")].append(
                r["seed"]
            )
    if failed:
        blocks.append(
            Table(
                "deployment_failed",
                ["dataset", "framework", "role", "seeds", "reason"],
                [
                    [label, f, role, ", ".join(map(str, sorted(seeds))), why]
                    for (label, f, role, why), seeds in failed.items()
                ],
            )
        )
    else:
        blocks.append(
            ("p", "Every deployment format of every model converted, and every ONNX model matched its framework.")
        )
    return blocks
