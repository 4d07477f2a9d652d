"""The compact per-dataset, per-framework summary of a run: the table `distillbench run` prints."""

from __future__ import annotations

import statistics
from collections import defaultdict

from distillbench.benchmarks.store.record import framework_label, is_deployment, is_ok
from distillbench.implementations.roles import ROLES
from distillbench.text import text_table

COLUMNS = ("dataset", "framework", "metric", *ROLES, "retention %", "kd gain %", "speed-up", "ok/failed")


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summary_rows(records: list[dict]) -> list[dict]:
    """Means over seeds of the primary metric per role, and of the students' derived numbers."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    variants = list(dict.fromkeys(r.get("variant") for r in records))  # a sweep's configurations, in run order
    for r in records:
        groups[(r.get("dataset_name") or str(r["dataset_id"]), r["framework"], variants.index(r.get("variant")), framework_label(r))].append(r)
    rows = []
    for (dataset, _, _, framework), group in sorted(groups.items()):
        ok = [r for r in group if is_ok(r)]
        metric = next((r["primary_metric"] for r in ok), None)
        by_role = {role: [r for r in ok if r["role"] == role] for role in ROLES}
        rows.append({
            "dataset": dataset, "framework": framework, "metric": metric or "-",
            **{role: _mean([r["metrics"][metric] for r in rs]) for role, rs in by_role.items()},
            "retention %": _mean([r["retention"] for r in by_role["student_kd"]]),
            "kd gain %": _mean([r["kd_gain"] for r in by_role["student_kd"]]),
            "speed-up": _mean([r["speedup"] for r in by_role["student_kd"]]),
            "ok/failed": f"{len(by_role['teacher'])}/{len({r['seed'] for r in group if not is_ok(r) and not is_deployment(r)})}",
        })
    return rows


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    return text_table(COLUMNS, [[_cell(row[c]) for c in COLUMNS] for row in rows])
