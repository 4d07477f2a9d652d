"""The committed baselines: a baseline is a run folder (``records.jsonl`` + ``manifest.json``) kept under
``results/baselines/<name>/`` and committed; ``compare`` takes it, or any run folder, as BASELINE.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from distillbench.benchmarks.store.record import is_ok, job_key
from distillbench.benchmarks.store.run_folder import MANIFEST, RECORDS, read_run
from distillbench.errors import UserError
from distillbench.validate import folder_name

BASELINES = Path("results") / "baselines"
BASELINE_INFO = "baseline.json"


def resolve_run(text: str | Path, baselines: Path = BASELINES) -> Path:
    """A run folder, or a baseline folder (same format), or the name of a baseline under ``baselines``."""
    path = Path(text)
    named = baselines / str(text)
    if not path.exists() and "/" not in str(text) and (named / MANIFEST).is_file():
        path = named
    if not path.exists():
        raise UserError(f"{text}: no such run folder" + ("" if "/" in str(text) else f" (nor a baseline {named})"))
    if not path.is_dir():
        raise UserError(f"{text}: not a folder")
    if not (path / MANIFEST).is_file():
        raise UserError(f"{text}: not a run folder (no {MANIFEST})")
    if not (path / RECORDS).is_file():
        raise UserError(f"{text}: not a run folder (no {RECORDS})")
    return path


def update_baseline(
    run_dir: Path, name: str | None = None, allow_failed: bool = False, baselines: Path = BASELINES
) -> Path:
    """Copy a run into ``baselines/<name>/``, replacing any previous one as a whole."""
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file() or not (run_dir / RECORDS).is_file():
        raise UserError(f"{run_dir}: not a run folder (needs {RECORDS} and {MANIFEST})")
    run = read_run(run_dir)
    manifest, records = run.manifest, run.records
    if not records:
        raise UserError(f"{run_dir}: holds no records")
    name_given, name = name, name or manifest.get("suite")
    if not name:
        raise UserError(f"{run_dir}: the run has no suite (--datasets): name the baseline with --name")
    if folder_name(name, "--name" if name_given else f"{run_dir / MANIFEST}: suite").startswith("."):
        raise UserError(
            f"baseline name {name!r}: must not start with '.' (hidden folders hold baselines being replaced)"
        )
    failed = sorted({job_key(r) for r in records if not is_ok(r)})
    if run.jobs.unfinished:  # --allow-failed or not: a baseline must hold every job the run planned
        (d, s, k, f), why = next(iter(sorted(run.jobs.unfinished.items())))
        fold = "" if k is None else f" fold {k}"
        raise UserError(
            f"{run_dir}: {len(run.jobs.unfinished)} of its {len(run.jobs.planned)} jobs are incomplete "
            f"or not run (first: dataset {d} seed {s}{fold} {f}: {why}); finish the run with "
            f"`distillbench run --resume --out {run_dir}`"
        )
    if not allow_failed:
        if manifest.get("status") != "complete":
            raise UserError(
                f"{run_dir}: the run is {manifest.get('status')}, not complete (finish it with "
                f"`distillbench run --resume --out {run_dir}`, or pass --allow-failed)"
            )
        if failed:
            shown = ", ".join(
                f"dataset {d} seed {s}{'' if k is None else f' fold {k}'} {f}" for d, s, k, f in failed[:3]
            ) + (" ..." if len(failed) > 3 else "")
            raise UserError(
                f"{run_dir}: {len(failed)} failed jobs ({shown}): a baseline with failed jobs hides "
                "regressions; rerun them with --resume, or pass --allow-failed"
            )
    baselines = Path(baselines)
    baselines.mkdir(parents=True, exist_ok=True)
    target = baselines / name
    if target.resolve() == run_dir.resolve():
        raise UserError(f"{run_dir} is already the baseline {name!r}")
    staging = baselines / f".{name}.new-{os.getpid()}"
    old = baselines / f".{name}.old-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for filename in (RECORDS, MANIFEST):
            shutil.copyfile(run_dir / filename, staging / filename)
            with open(staging / filename, "rb") as fh:
                os.fsync(fh.fileno())
        info = {
            "name": name,
            "source": str(run_dir.resolve()),
            "run_id": manifest.get("run_id"),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "jobs_failed": len(failed),
            "records": len(records),
        }
        (staging / BASELINE_INFO).write_text(json.dumps(info, indent=1) + "\n")
        # Swap the folder as a whole: a reader sees the old baseline, the new one, or (for the
        # instant between the two renames) none, never a mix of the two.
        if target.exists():
            os.rename(target, old)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not target.exists():
            os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target
