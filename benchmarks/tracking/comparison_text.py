"""A comparison (``compare.py``) as text for a terminal or as Markdown: the two runs, what differs
between them, the regressions first, then every row; and as JSON for machines (``comparison_json``)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

from distillbench.benchmarks.store.flags import FLAGS
from distillbench.benchmarks.store.metric_registry import BY_NAME
from distillbench.benchmarks.store.record import split_label
from distillbench.benchmarks.tracking.compare import KD_EFFECT, Comparison, FlagChange, JobChange, Row
from distillbench.benchmarks.tracking.verdicts import IMPROVED, REGRESSED, UNCHANGED, sample_sd
from distillbench.implementations.roles import REFERENCES, ROLES
from distillbench.text import markdown_table, md_escape, text_table, utc_time

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


def _spread(values: list[float], center: float | None, kind: str) -> str:
    n = len(values)
    if kind == "quality":
        sd = sample_sd(values)
        return f"{_num(center)}" + ("" if sd is None else f" ±{sd:.2g}") + f" (n={n})"
    return f"{_num(center)} (n={n})"


def row_cells(row: Row) -> list[str]:
    if row.lost:
        change, threshold = "lost", row.basis
    elif row.metric == KD_EFFECT:
        change, threshold = f"{row.change:+.4g}", row.basis
    elif row.kind == "quality":
        change = f"{row.change:+.4g}"
        threshold = f"±{_num(row.threshold)} ({row.basis})"
    else:
        change = (
            "-"
            if row.change is None
            else f"x{row.change:.2f}" + (" slower" if row.change >= 1.005 else " faster" if row.change <= 0.995 else "")
        )
        p = "" if row.p_value is None else f", p={row.p_value:.3g}"
        threshold = f"x{row.threshold:.2f}{p} ({row.basis})"
    verdict = row.verdict + (" (advisory)" if row.advisory and row.verdict != UNCHANGED else "")
    metric = row.metric if row.kind == "quality" else f"{row.metric} [{BY_NAME[row.metric].unit}]"
    return [
        row.dataset,
        row.framework,
        row.role,
        metric,
        _spread(row.baseline, row.center_b, row.kind),
        _spread(row.candidate, row.center_c, row.kind),
        change,
        threshold,
        verdict.upper() if row.fails else verdict,
    ]


def _table(header: tuple, rows: list[list[str]], markdown: bool) -> str:
    return markdown_table(header, rows) if markdown else text_table(header, rows)


def _run_line(label: str, path: Path, manifest: dict) -> str:
    env = manifest.get("environment") or {}
    git = env.get("git") or {}
    machine = env.get("machine") or {}
    commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    return (
        f"{label}: {path} (run {manifest.get('run_id')}, suite {manifest.get('suite') or 'custom'}, "
        f"seeds {manifest.get('seeds')}, commit {commit}, {utc_time(manifest.get('started'))}; "
        f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {manifest.get('threads')} threads)"
    )


JOB_COLUMNS = ("dataset", "seed", "framework", "roles", "status", "reason")


def _job_cells(job: JobChange) -> list[str]:
    roles = "all" if sorted(job.roles) in (sorted(ROLES), sorted(REFERENCES)) else ", ".join(job.roles)
    status = job.status.upper() if job.is_regression else job.status
    split = split_label(job.seed if job.fold is None else (job.seed, job.fold))
    return [f"{job.dataset} ({job.dataset_id})", split, job.framework, roles, status, job.error or ""]


FLAG_COLUMNS = ("dataset", "framework", "role", "flag", "seeds flagged: baseline", "candidate", "status")


def _flag_cells(change: FlagChange) -> list[str]:
    return [
        f"{change.dataset} ({change.dataset_id})",
        change.framework,
        change.role,
        FLAGS[change.flag],
        str(change.baseline),
        f"{change.candidate} of {change.seeds}",
        change.status,
    ]


def format_comparison(comparison: Comparison, fail_on: str, markdown: bool = False) -> str:
    """The whole comparison: the two runs, what differs between them, the regressions first, then
    every row."""
    c, t = comparison, comparison.thresholds
    failing_rows, failing_jobs = c.regressions(fail_on)

    def item(text: str) -> str:  # a bullet; escaped in Markdown: paths, run ids, notes and machines are outside text
        return "- " + md_escape(text) if markdown else "  " + text

    out = []
    out.append("# distillbench compare" if markdown else "distillbench compare")
    out.append("")
    out.append(item(_run_line("baseline", c.baseline_dir, c.baseline_manifest)))
    out.append(item(_run_line("candidate", c.candidate_dir, c.candidate_manifest)))
    floors = ", ".join(f"{m} {v}" for m, v in t.floors.items())
    pairing = "paired by seed where the runs share seeds" if t.paired else "unpaired"
    out.append(
        item(
            f"quality: regressed when worse than the baseline by more than both the floor and {t.k:g} "
            f"standard errors of the difference over seeds ({pairing}; floors: {floors}); and when the "
            "distilled students equal the scratch students in every seed"
        )
    )
    out.append(
        item(
            f"timing: regressed when the ratio of the medians over seeds is beyond "
            f"x{1 + t.timing_threshold:.2f} and a one-sided Mann-Whitney U test gives p <= {t.alpha:g}"
        )
    )
    if c.machine_differences:
        differences = "; ".join(c.machine_differences)
        out.append(item(f"MACHINES DIFFER, timing is advisory (shown, never fails): {differences}"))
    else:
        out.append(item("same machine, threads and framework versions: timing counts"))
    for note in c.notes:
        out.append(item("note: " + note))
    out.append("")

    counts: defaultdict[tuple[str, str], int] = defaultdict(int)
    for row in c.rows:
        counts[(row.kind, row.verdict)] += 1
    summary = ", ".join(
        f"{kind} {counts[(kind, REGRESSED)]} regressed / {counts[(kind, IMPROVED)]} improved / "
        f"{counts[(kind, UNCHANGED)]} unchanged"
        for kind in ("quality", "timing")
    )
    job_regressions = [j for j in c.jobs if j.is_regression]
    status = "FAIL" if failing_rows or failing_jobs else "ok"
    newly = sum(f.status == "newly" for f in c.flags)
    headline = (
        f"result: {status} (--fail-on {fail_on}): {len(failing_rows)} failing rows, "
        f"{len(failing_jobs)} missing/failed jobs; {summary}; {len(c.jobs) - len(job_regressions)} new or fixed jobs"
        + (f"; {newly} newly flagged models (reported, not failed on)" if newly else "")
    )
    out.append(("**" + md_escape(headline) + "**") if markdown else headline)
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
    if c.flags:
        out.append("## Flags newly raised or cleared" if markdown else "FLAGS newly raised or cleared")
        out.append("")
        out.append(
            "A model newly ending on its training budget may not have converged: its numbers are suspect. "
            "Flags are reported, never failed on."
        )
        out.append("")
        out.append(_table(FLAG_COLUMNS, [_flag_cells(f) for f in c.flags], markdown))
        out.append("")
    if c.jobs:
        out.append("## Jobs missing, failed, new or fixed" if markdown else "JOBS missing, failed, new or fixed")
        out.append("")
        out.append(_table(JOB_COLUMNS, [_job_cells(j) for j in c.jobs], markdown))
        out.append("")
    out.append("## Every row" if markdown else "EVERY ROW")
    out.append("")
    legend = (
        "baseline and candidate: mean ±sd over seeds (quality), median (timing). change: candidate - "
        "baseline (quality; paired: the mean of the per-seed differences), ratio of medians as a slowdown "
        f"factor (timing). {KD_EFFECT}: the largest relative difference between the distilled and the scratch "
        "student of a seed."
    )
    out.append(md_escape(legend) if markdown else legend)
    out.append("")
    out.append(_table(COLUMNS, [row_cells(r) for r in c.rows], markdown))
    return "\n".join(out) + "\n"


JSON_SCHEMA = 1  # bumped when a field changes meaning or goes away


def comparison_json(comparison: Comparison, fail_on: str) -> dict:
    """The comparison for machines (`compare --json`): the verdict and exit status under ``fail_on``,
    the two runs, the thresholds, and every row and job with its own verdict; each row and job says
    whether it fails the comparison. Every number is finite or null."""
    c = comparison
    failing_rows, failing_jobs = c.regressions(fail_on)
    failing = {id(x) for x in failing_rows + failing_jobs}

    def run(path, manifest):
        git = (manifest.get("environment") or {}).get("git") or {}
        return {
            "path": str(path),
            "run_id": manifest.get("run_id"),
            "suite": manifest.get("suite"),
            "seeds": manifest.get("seeds"),
            "commit": git.get("commit"),
            "dirty": git.get("dirty"),
            "started": manifest.get("started"),
        }

    return {
        "schema": JSON_SCHEMA,
        "result": "fail" if failing_rows or failing_jobs else "ok",
        "exit_code": c.exit_code(fail_on),
        "fail_on": fail_on,
        "baseline": run(c.baseline_dir, c.baseline_manifest),
        "candidate": run(c.candidate_dir, c.candidate_manifest),
        "thresholds": dataclasses.asdict(c.thresholds),
        "timing_advisory": c.timing_advisory,
        "machine_differences": c.machine_differences,
        "notes": c.notes,
        "counts": {
            kind: {
                verdict: sum(r.kind == kind and r.verdict == verdict for r in c.rows)
                for verdict in (REGRESSED, IMPROVED, UNCHANGED)
            }
            for kind in ("quality", "timing")
        },
        "failing": {"rows": len(failing_rows), "jobs": len(failing_jobs)},
        "rows": [{**dataclasses.asdict(r), "lost": list(r.lost), "fails": id(r) in failing} for r in c.rows],
        "jobs": [
            {**dataclasses.asdict(j), "is_regression": j.is_regression, "fails": id(j) in failing} for j in c.jobs
        ],
        "flags": [{**dataclasses.asdict(f), "status": f.status} for f in c.flags],  # reported, never failing
    }
