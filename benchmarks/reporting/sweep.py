"""The Sweep section of a report: every configuration of a sweep, the Pareto fronts of quality against
student size, and training time against training rows."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from distillbench.benchmarks.reporting import figures, stats
from distillbench.benchmarks.reporting.aggregate import dataset_labels, run_order, summarize
from distillbench.benchmarks.reporting.blocks import Table, entry_cells, entry_columns, make_figure
from distillbench.benchmarks.store.record import is_ok
from distillbench.implementations.roles import ROLES


def sweep_variants(records: list[dict], manifest: dict) -> list[dict]:
    """The configurations of the run in the sweep's order ({"label", "params"}); one with label None
    when the run has no sweep."""
    variants = list(manifest.get("variants") or [])
    known = {v["label"] for v in variants}
    for r in records:
        if r.get("variant") is not None and r["variant"] not in known:
            variants.append({"label": r["variant"], "params": r.get("variant_params") or {}})
            known.add(r["variant"])
    return variants or [{"label": None, "params": {}}]


def sweep_entries(records: list[dict], manifest: dict, variants: list[dict]) -> list[dict]:
    """The report's summary entries (``summarize``) per configuration, with the configuration's number
    (1-based, the sweep's order), label, and the students' sizes and training rows; ordered by
    dataset, framework, configuration."""
    out = []
    for number, variant in enumerate(variants, 1):
        for e in summarize([r for r in records if r.get("variant") == variant["label"]], manifest):
            kd = list(e["by_seed"]["student_kd"].values())
            e.update(
                number=number,
                variant=variant["label"],
                params=variant["params"],
                student_bytes=next((r.get("model_bytes") for r in kd), None),
                student_params=next((r.get("n_params") for r in kd), None),
                train_rows=stats.median([r.get("train_rows") for r in kd]),
            )
            out.append(e)
    datasets, frameworks = run_order(records, manifest)
    return sorted(out, key=lambda e: (datasets.index(e["dataset_id"]), frameworks.index(e["framework"]), e["number"]))


def _front_members(entries: list[dict], key: str) -> set[tuple]:
    """(dataset, framework, number) of the configurations on the Pareto front of quality vs ``key``."""
    members = set()
    for dataset_id, framework in dict.fromkeys((e["dataset_id"], e["framework"]) for e in entries):
        es = [
            e
            for e in entries
            if (e["dataset_id"], e["framework"]) == (dataset_id, framework)
            and e[key] is not None
            and e["quality"]["student_kd"].mean is not None
        ]
        front = (
            figures.pareto_front([(e[key], e["quality"]["student_kd"].mean) for e in es], es[0]["higher_is_better"])
            if es
            else []
        )
        members |= {(dataset_id, framework, es[i]["number"]) for i in front}
    return members


def scaling_fits(records: list[dict], labels: dict[int, str], frameworks: list[str]) -> list[dict]:
    """Per (dataset, framework, role): the (training rows, training seconds) of every ok model trained
    (reused models counted once) and the least-squares fit of log(seconds) on log(rows): slope,
    intercept and R^2 (None with fewer than two distinct row counts)."""
    points = defaultdict(list)
    for r in records:
        if is_ok(r) and r["role"] in ROLES and not r.get("reused") and r.get("train_rows") and r.get("train_seconds"):
            points[(r["dataset_id"], r["framework"], r["role"])].append((r["train_rows"], r["train_seconds"]))
    fits = []
    for (dataset_id, framework, role), ps in sorted(
        points.items(),
        key=lambda kv: (
            kv[0][0],
            frameworks.index(kv[0][1]) if kv[0][1] in frameworks else len(frameworks),
            ROLES.index(kv[0][2]),
        ),
    ):
        x, y = np.log([p[0] for p in ps]), np.log([p[1] for p in ps])
        slope = intercept = r2 = None
        if len(set(x)) >= 2:
            slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
            residual = y - (slope * x + intercept)
            total = float(np.sum((y - y.mean()) ** 2))
            r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else None
        fits.append(
            {
                "dataset_id": dataset_id,
                "label": labels.get(dataset_id, str(dataset_id)),
                "framework": framework,
                "role": role,
                "rows": [p[0] for p in ps],
                "seconds": [p[1] for p in ps],
                "slope": slope,
                "intercept": intercept,
                "r2": r2,
            }
        )
    return fits


def sweep_blocks(records: list[dict], manifest: dict, variants: list[dict], frameworks: list[str]) -> list:
    """The Sweep section: every configuration per dataset and framework, the Pareto fronts of quality
    against student size, and, when the training rows vary, training time against rows."""
    labels = dataset_labels(records, manifest)
    entries = sweep_entries(records, manifest, variants)
    swept = manifest.get("sweep_keys") or list(dict.fromkeys(k for v in variants for k in v["params"]))
    blocks: list = [
        ("h2", "Sweep"),
        (
            "p",
            f"{len(variants)} configurations per job, the Cartesian product of {', '.join(swept)} (numbered in the "
            "sweep's order): " + "; ".join(f"{i}: {v['label']}" for i, v in enumerate(variants, 1)) + ". Quality is "
            "the primary metric, mean ± 95% CI over seeds; sizes and latency are the distilled student's; 'front' "
            "says whether the configuration's distilled student is on its framework's Pareto front of quality vs "
            "parameters / vs bytes. A model trained once for several configurations (the teacher per teacher "
            "setting, the scratch student per everything but the distillation) is reused with its numbers.",
        ),
    ]
    if not entries:
        return blocks + [("p", "No configuration finished: there is nothing to compare (see Failed jobs).")]
    on_params, on_bytes = _front_members(entries, "student_params"), _front_members(entries, "student_bytes")

    def front(e):
        key = (e["dataset_id"], e["framework"], e["number"])
        return "/".join("yes" if key in members else "no" for members in (on_params, on_bytes))

    blocks.append(
        Table(
            "sweep",
            [
                *entry_columns(True),
                *ROLES,
                "KD gain %",
                "student params",
                "student bytes",
                "student p50 us",
                "kd train s",
                "scratch train s",
                "train rows",
                "front params/bytes",
                "seeds",
            ],
            [
                [
                    *entry_cells(e, True),
                    *(e["quality"][r] for r in ROLES),
                    e["kd_gain"],
                    e["student_params"],
                    e["student_bytes"],
                    e["latency_p50_us"]["student_kd"],
                    e["train_seconds"]["student_kd"],
                    e["train_seconds"]["student_scratch"],
                    e["train_rows"],
                    front(e),
                    e["seeds"],
                ]
                for e in entries
            ],
        )
    )
    for key, name, what in (
        ("student_params", "sweep_pareto_params", "parameters"),
        ("student_bytes", "sweep_pareto_bytes", "size in bytes"),
    ):
        points = [
            {
                "dataset_id": e["dataset_id"],
                "label": e["label"],
                "metric": e["metric"],
                "higher_is_better": e["higher_is_better"],
                "framework": e["framework"],
                "number": e["number"],
                "x": e[key],
                "kd": e["quality"]["student_kd"].mean,
                "kd_half": e["quality"]["student_kd"].half,
                "scratch": e["quality"]["student_scratch"].mean,
            }
            for e in entries
            if e[key] is not None and e["quality"]["student_kd"].mean is not None
        ]
        if points:
            blocks.append(
                make_figure(
                    name,
                    figures.pareto_figure,
                    points,
                    frameworks,
                    f"student {what}",
                    caption=f"Quality of the distilled student (filled, mean and 95% CI over seeds; the "
                    f"scratch student hollow) vs the student's {what}, per configuration (the "
                    f"numbers); the line is each framework's Pareto front",
                )
            )
        else:
            blocks.append(("p", f"No figure of quality vs student {what}: no configuration has both recorded."))

    blocks.append(
        (
            "p",
            "Training time vs training rows (training.train_fraction): per dataset, framework and role, "
            "the least-squares slope of log(training time) on log(rows) over the configurations and seeds "
            "(1 = time grows in proportion to the rows; early stopping makes the epochs vary too, and the first model "
            "a worker trains also pays the framework's warm-up, which weighs on tiny runs).",
        )
    )
    if "training.train_fraction" not in swept:
        return blocks + [("p", "No training-time scaling figure: this sweep does not vary training.train_fraction.")]
    fits = scaling_fits(records, labels, frameworks)
    fitted = [f for f in fits if f["slope"] is not None]
    if not fitted:
        return blocks + [
            (
                "p",
                "No training-time scaling figure: no dataset, framework and role has ok models "
                "trained on two or more distinct numbers of rows.",
            )
        ]
    blocks.append(
        Table(
            "sweep_scaling",
            ["dataset", "framework", "role", "points", "rows min", "rows max", "slope log(time)/log(rows)", "R^2"],
            [
                [
                    f["label"],
                    f["framework"],
                    f["role"],
                    len(f["rows"]),
                    min(f["rows"]),
                    max(f["rows"]),
                    f["slope"],
                    f["r2"],
                ]
                for f in fits
            ],
        )
    )
    slopes = "; ".join(f"{f['label']} {f['framework']} {f['role']} {f['slope']:.2f}" for f in fitted)
    blocks.append(
        make_figure(
            "sweep_scaling",
            figures.scaling_figure,
            fits,
            frameworks,
            caption=f"Training time vs training rows, log-log, with the least-squares line per framework "
            f"and role (slopes: {slopes})",
        )
    )
    return blocks
