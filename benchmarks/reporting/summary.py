"""The compact per-dataset, per-framework summary of a run: the table `distillbench run` prints."""

from __future__ import annotations

import statistics
from collections import defaultdict

from distillbench.benchmarks.store.flags import FLAGS
from distillbench.benchmarks.store.record import framework_label, is_deployment, is_ok, split_key, split_label
from distillbench.implementations.roles import REFERENCE, REFERENCES, ROLES
from distillbench.text import text_table

COLUMNS = ("dataset", "framework", "metric", *ROLES, *REFERENCES, "retention %", "kd gain %", "speed-up", "ok/failed")


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summary_rows(records: list[dict]) -> list[dict]:
    """Means over seeds of the primary metric per role (the reference roles: the dataset's, beside
    every framework), and of the students' derived numbers."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    references: dict[str, list[dict]] = defaultdict(list)
    variants = list(dict.fromkeys(r.get("variant") for r in records))  # a sweep's configurations, in run order
    for r in records:
        dataset = r.get("dataset_name") or str(r["dataset_id"])
        if r["framework"] == REFERENCE:
            references[dataset] += [r] if is_ok(r) else []
            continue
        groups[(dataset, r["framework"], variants.index(r.get("variant")), framework_label(r))].append(r)
    rows = []
    for (dataset, _, _, framework), group in sorted(groups.items()):
        ok = [r for r in group if is_ok(r)]
        metric = next((r["primary_metric"] for r in ok + references[dataset]), None)
        by_role = {role: [r for r in ok if r["role"] == role] for role in ROLES}
        by_role |= {role: [r for r in references[dataset] if r["role"] == role] for role in REFERENCES}
        rows.append(
            {
                "dataset": dataset,
                "framework": framework,
                "metric": metric or "-",
                **{role: _mean([r["metrics"][metric] for r in rs]) for role, rs in by_role.items()},
                "retention %": _mean([r["retention"] for r in by_role["student_kd"]]),
                "kd gain %": _mean([r["kd_gain"] for r in by_role["student_kd"]]),
                "speed-up": _mean([r["speedup"] for r in by_role["student_kd"]]),
                "ok/failed": f"{len(by_role['teacher'])}/"
                f"{len({split_key(r) for r in group if not is_ok(r) and not is_deployment(r)})}",
            }
        )
    return rows


def warnings(records: list[dict]) -> list[str]:
    """One line per flag raised in the run (``store/flags.py``): how many models, and which."""
    flagged = defaultdict(list)
    for r in records:
        if is_ok(r):
            for flag in r.get("flags") or []:
                flagged[flag].append(r)
    lines = []
    for flag, rs in flagged.items():
        models = ", ".join(
            f"{r.get('dataset_name') or r['dataset_id']} {framework_label(r)} "
            f"seed {split_label(split_key(r))} {r['role']}" + (f" ({r['stop_reason']})" if flag == "budget" else "")
            for r in rs[:6]
        )
        lines.append(f"warning: {len(rs)} model(s) {FLAGS[flag]}: {models}" + (" ..." if len(rs) > 6 else ""))
    return lines


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    return text_table(COLUMNS, [[_cell(row[c]) for c in COLUMNS] for row in rows])
