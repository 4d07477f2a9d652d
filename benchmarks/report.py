"""The report of a run: ``reports/<run_id>/report.md`` (GitHub-flavoured Markdown)."""

from __future__ import annotations

import time
from pathlib import Path

from distillbench.benchmarks.results import latest_records, read_manifest, read_records
from distillbench.benchmarks.summary import format_table, summary_rows


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def header_lines(manifest: dict) -> list[str]:
    env = manifest.get("environment", {})
    git = env.get("git", {})
    machine = env.get("machine", {})
    packages = env.get("packages", {})
    commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    overhead = manifest.get("harness_overhead")
    return [
        f"- **run**: `{manifest['run_id']}`, suite `{manifest.get('suite') or 'custom'}`, status {manifest.get('status')}",
        f"- **when**: {_when(manifest.get('started'))} to {_when(manifest.get('finished'))}"
        f" ({manifest.get('wall_seconds') or 0:.0f} s of jobs; harness overhead "
        f"{'-' if overhead is None else f'{100 * overhead:.1f}%'})",
        f"- **machine**: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {manifest.get('threads')} threads"
        f" per framework, device {manifest.get('device')}",
        f"- **code**: commit `{commit}`; Python {env.get('python', '?')}, "
        + ", ".join(f"{k} {packages[k]}" for k in ("torch", "tensorflow-cpu", "tensorflow", "keras", "numpy") if k in packages),
        f"- **jobs**: {manifest.get('jobs')}; seeds {manifest.get('seeds')}; frameworks {', '.join(manifest.get('frameworks', []))}",
    ]


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    manifest = read_manifest(run_dir)
    records = latest_records(read_records(run_dir))
    out = out or Path("reports") / manifest["run_id"]
    out.mkdir(parents=True, exist_ok=True)
    failed = [r for r in records if r["status"] != "ok" and r["role"] == "teacher"]
    lines = [f"# distillbench report: {manifest['run_id']}", "", *header_lines(manifest), "",
             "## Results (means over seeds)", "",
             "Quality is the primary metric on the test split (accuracy for classification, RMSE in the "
             "target's units for regression). Retention: student quality as % of the teacher's (100 = equal). "
             "KD gain: % improvement of the distilled student over the scratch student. Speed-up: teacher "
             "p50 latency / student p50 latency at batch 1.", "",
             format_table(summary_rows(records), markdown=True), ""]
    if failed:
        lines += ["## Failed jobs", ""]
        lines += [f"- dataset {r['dataset_id']} seed {r['seed']} {r['framework']}: {r['error']}" for r in failed]
    path = out / "report.md"
    partial = path.with_suffix(".md.partial")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(path)
    return path
