"""A comparison (``compare.py``) as text for a terminal or as Markdown: the two runs, what differs
between them, the regressions first, then every row."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from distillbench.benchmarks.store.metric_registry import BY_NAME
from distillbench.benchmarks.tracking.compare import KD_EFFECT, Comparison, JobChange, Row
from distillbench.benchmarks.tracking.verdicts import IMPROVED, REGRESSED, UNCHANGED, sample_sd
from distillbench.implementations.roles import ROLES
from distillbench.text import markdown_table, text_table, utc_time



COLUMNS = ("dataset", "framework", "role", "metric", "baseline", "candidate", "change", "threshold", "verdict")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4g}"


def _spread(values: list[float], center: float, kind: str) -> str:
    n = len(values)
    if kind == "quality":
        sd = sample_sd(values)
        return f"{_num(center)}" + ("" if sd is None else f" ±{sd:.2g}") + f" (n={n})"
    return f"{_num(center)} (n={n})"


def row_cells(row: Row) -> list[str]:
    if row.metric == KD_EFFECT:
        change, threshold = f"{row.change:+.4g}", row.basis
    elif row.kind == "quality":
        change = f"{row.change:+.4g}"
        threshold = f"±{_num(row.threshold)} ({row.basis})"
    else:
        change = "-" if row.change is None else f"x{row.change:.2f}" + (
            " slower" if row.change >= 1.005 else " faster" if row.change <= 0.995 else "")
        p = "" if row.p_value is None else f", p={row.p_value:.3g}"
        threshold = f"x{row.threshold:.2f}{p} ({row.basis})"
    verdict = row.verdict + (" (advisory)" if row.advisory and row.verdict != UNCHANGED else "")
    metric = row.metric if row.kind == "quality" else f"{row.metric} [{BY_NAME[row.metric].unit}]"
    return [row.dataset, row.framework, row.role, metric, _spread(row.baseline, row.center_b, row.kind),
            _spread(row.candidate, row.center_c, row.kind), change, threshold, verdict.upper() if row.fails else verdict]


def _table(header: tuple, rows: list[list[str]], markdown: bool) -> str:
    return markdown_table(header, rows) if markdown else text_table(header, rows)


def _run_line(label: str, path: Path, manifest: dict) -> str:
    env = manifest.get("environment") or {}
    git = env.get("git") or {}
    machine = env.get("machine") or {}
    commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    return (f"{label}: {path} (run {manifest.get('run_id')}, suite {manifest.get('suite') or 'custom'}, "
            f"seeds {manifest.get('seeds')}, commit {commit}, {utc_time(manifest.get('started'))}; "
            f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {manifest.get('threads')} threads)")


JOB_COLUMNS = ("dataset", "seed", "framework", "roles", "status", "reason")


def _job_cells(job: JobChange) -> list[str]:
    roles = "all" if sorted(job.roles) == sorted(ROLES) else ", ".join(job.roles)
    status = job.status.upper() if job.is_regression else job.status
    return [f"{job.dataset} ({job.dataset_id})", str(job.seed), job.framework, roles, status, job.error or ""]


def format_comparison(comparison: Comparison, fail_on: str, markdown: bool = False) -> str:
    """The whole comparison: the two runs, what differs between them, the regressions first, then
    every row."""
    c, t = comparison, comparison.thresholds
    failing_rows, failing_jobs = c.regressions(fail_on)
    bullet = "- " if markdown else "  "
    out = []
    out.append("# distillbench compare" if markdown else "distillbench compare")
    out.append("")
    out.append(bullet + _run_line("baseline", c.baseline_dir, c.baseline_manifest))
    out.append(bullet + _run_line("candidate", c.candidate_dir, c.candidate_manifest))
    floors = ", ".join(f"{m} {v}" for m, v in t.floors.items())
    out.append(bullet + f"quality: regressed when worse than the baseline by more than both the floor and {t.k:g} standard "
               f"errors of the difference over seeds ({'paired by seed where the runs share seeds' if t.paired else 'unpaired'}; "
               f"floors: {floors}); and when the distilled students equal the scratch students in every seed")
    out.append(bullet + f"timing: regressed when the ratio of the medians over seeds is beyond x{1 + t.timing_threshold:.2f} "
               f"and a one-sided Mann-Whitney U test gives p <= {t.alpha:g}")
    if c.machine_differences:
        out.append(bullet + "MACHINES DIFFER, timing is advisory (shown, never fails): " + "; ".join(c.machine_differences))
    else:
        out.append(bullet + "same machine, threads and framework versions: timing counts")
    for note in c.notes:
        out.append(bullet + "note: " + note)
    out.append("")

    counts = defaultdict(int)
    for row in c.rows:
        counts[(row.kind, row.verdict)] += 1
    summary = ", ".join(f"{kind} {counts[(kind, REGRESSED)]} regressed / {counts[(kind, IMPROVED)]} improved / "
                        f"{counts[(kind, UNCHANGED)]} unchanged" for kind in ("quality", "timing"))
    job_regressions = [j for j in c.jobs if j.is_regression]
    status = "FAIL" if failing_rows or failing_jobs else "ok"
    headline = (f"result: {status} (--fail-on {fail_on}): {len(failing_rows)} failing rows, "
                f"{len(failing_jobs)} missing/failed jobs; {summary}; {len(c.jobs) - len(job_regressions)} new or fixed jobs")
    out.append(("**" + headline + "**") if markdown else headline)
    out.append("")

    if failing_rows or failing_jobs:
        out.append("## Regressions" if markdown else "REGRESSIONS")
        out.append("")
        if failing_rows:
            out.append(_table(COLUMNS, [row_cells(r) for r in failing_rows], markdown))
            out.append("")
        if failing_jobs:
            out.append(_table(JOB_COLUMNS, [_job_cells(j) for j in failing_jobs], markdown))
            out.append("")
    if c.jobs:
        out.append("## Jobs missing, failed, new or fixed" if markdown else "JOBS missing, failed, new or fixed")
        out.append("")
        out.append(_table(JOB_COLUMNS, [_job_cells(j) for j in c.jobs], markdown))
        out.append("")
    out.append("## Every row" if markdown else "EVERY ROW")
    out.append("")
    out.append("baseline and candidate: mean ±sd over seeds (quality), median (timing). change: candidate - baseline "
               "(quality; paired: the mean of the per-seed differences), ratio of medians as a slowdown factor (timing). "
               f"{KD_EFFECT}: the largest relative difference between the distilled and the scratch student of a seed.")
    out.append("")
    out.append(_table(COLUMNS, [row_cells(r) for r in c.rows], markdown))
    return "\n".join(out) + "\n"
