"""The report's tables about the run itself: how it ran (run), on what data (datasets), and what
failed (failed)."""

from __future__ import annotations

from collections import defaultdict

from distillbench.benchmarks.reporting.blocks import Table
from distillbench.benchmarks.store.record import is_deployment, is_ok, job_key, split_label
from distillbench.benchmarks.store.run_folder import planned_jobs
from distillbench.implementations.teachers import TEACHER_KINDS
from distillbench.text import utc_time


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(value, 60)
    return f"{value:.1f} s" if minutes < 1 else f"{int(minutes)} min {seconds:.0f} s"


def _teacher_text(teacher: dict) -> str:
    """The teacher of a config in a few words, by its kind (a config from before kinds: an MLP)."""
    return TEACHER_KINDS.get(teacher.get("kind", "mlp"), TEACHER_KINDS["mlp"]).describe(teacher)


def _training_text(training: dict) -> str:
    """The training budget and schedule in a few words (a config from before they existed: epochs)."""
    budget = f"at most {training.get('epochs')} epochs" + (
        f" and {training['max_steps']} steps" if "max_steps" in training else ""
    )
    schedule = training.get("lr_schedule", "constant")
    return (
        f"{budget}, batch {training.get('batch_size')}, lr {training.get('learning_rate')} ({schedule}), patience "
        f"{training.get('patience')} evaluations"
        + (
            f" of >= {training['eval_steps']} steps, min_delta {training.get('min_delta')}"
            if "eval_steps" in training
            else ""
        )
        + (f", time limit {training['time_limit']} s per model" if training.get("time_limit") else "")
    )


def run_table(manifest: dict) -> Table:
    env = manifest.get("environment", {})
    git, mach, packages = env.get("git", {}), env.get("machine", {}), env.get("packages", {})
    config = manifest.get("config", {})
    teacher, student = config.get("teacher", {}), config.get("student", {})
    distill, training = config.get("distill", {}), config.get("training", {})
    overhead = manifest.get("harness_overhead")
    jobs = manifest.get("jobs", {})
    fields = [
        ("run", manifest.get("run_id")),
        ("schema version", manifest.get("schema_version", 1)),  # of its records and manifest (store/record.py)
        ("suite", manifest.get("suite") or "custom (--datasets)"),
        *(
            [
                (
                    "fallback",
                    f"ran suite {fallback.get('to')} instead of {fallback.get('from')}: {fallback.get('reason')}",
                )
            ]
            if (fallback := manifest.get("fallback"))
            else []
        ),
        (
            "status",
            f"{manifest.get('status')}"
            + (
                " (its manifest says running, but no process holds the run folder: "
                "it was killed, or its folder took no more writes)"
                if manifest.get("status_written")
                else ""
            ),
        ),
        ("command", " ".join(manifest.get("command", []))),
        ("started", utc_time(manifest.get("started"))),
        ("finished", utc_time(manifest.get("finished"))),
        (
            "duration",
            f"{_seconds(manifest.get('wall_seconds'))} (measured training and inference "
            f"{_seconds(manifest.get('measured_seconds'))})",
        ),
        ("harness overhead", "-" if overhead is None else f"{100 * overhead:.1f}% of the run's wall time"),
        (
            "machine",
            f"{mach.get('cpu', '?')}, {mach.get('cores', '?')} cores, {mach.get('arch', '?')}, "
            f"{env.get('platform', mach.get('os', '?'))}, host {env.get('hostname', '?')}",
        ),
        ("threads, device", f"{manifest.get('threads')} per framework, {manifest.get('device')}"),
        (
            "code",
            f"commit {(git.get('commit') or 'unknown')[:12]}"
            + (" (dirty: uncommitted changes)" if git.get("dirty") else ""),
        ),
        ("versions", f"Python {env.get('python', '?')}; " + ", ".join(f"{k} {v}" for k, v in packages.items())),
        ("frameworks", ", ".join(manifest.get("frameworks", []))),
        ("seeds", ", ".join(map(str, manifest.get("seeds", [])))),
        *(
            [("folds", f"{manifest['folds']} per seed (cross-validation: one job per fold, tested on it)")]
            if manifest.get("folds")
            else []
        ),
        *([("OpenML tasks", _tasks_text(manifest))] if _tasks_text(manifest) else []),
        (
            "config",
            f"{config.get('name', '?')}: teacher {_teacher_text(teacher)}; "
            f"student {student.get('widths')} {student.get('activation')}; "
            f"alpha {distill.get('alpha')}, T {distill.get('temperature')}, compressors "
            f"{distill.get('classification_compressor')}/{distill.get('regression_compressor')}; "
            f"{_training_text(training)}",
        ),
        *(
            [
                (
                    "sweep",
                    f"{len(manifest['variants'])} configurations per job: "
                    + "; ".join(
                        f"{path} = {config['sweep'][path]}"
                        for path in manifest.get("sweep_keys") or config.get("sweep") or {}
                    ),
                )
            ]
            if manifest.get("variants") and config.get("sweep")
            else []
        ),
        (
            "jobs",
            f"{jobs.get('planned')} planned, {jobs.get('ok')} ok, {jobs.get('failed')} failed, "
            f"{jobs.get('missing', 0)} incomplete or not run"
            + (
                f"; over {n} invocations of `distillbench run`"
                if (n := len(manifest.get("invocations") or [])) > 1
                else ""
            ),
        ),
        (
            "timing",
            f"budget {manifest.get('timing_budget_s')} s per model, job time limit {manifest.get('job_timeout_s')} s",
        ),
    ]
    return Table("run", ["field", "value"], [[k, v] for k, v in fields])


def datasets_table(manifest: dict) -> Table:
    rows = []
    for d in manifest.get("datasets", []):
        split = d.get("rows") or {}
        rows.append(
            [
                d["id"],
                d.get("name"),
                d.get("task"),
                d.get("target"),
                "/".join(str(split.get(k, "?")) for k in ("train", "val", "test")) if split else None,
                d.get("features"),
                d.get("error") or "; ".join([d.get("note") or "", *d.get("notes", [])]).strip("; "),
            ]
        )
    return Table("datasets", ["id", "name", "task", "target", "rows train/val/test", "features", "note"], rows)


def _tasks_text(manifest: dict) -> str:
    """The OpenML tasks of a run, as its run table says them; "" when it ran none."""
    return ", ".join(
        f"{t['id']} (dataset {d['id']}: {t['repeats']} x {t['folds']} folds)"
        for d in manifest.get("datasets", [])
        if (t := d.get("openml_task"))
    )


def failed_table(records: list[dict], manifest: dict, labels: dict[int, str]) -> Table:
    """Every failed job with its reason (the seeds failing for one reason on one row), and every
    planned job with no record (a run cut short)."""
    reasons: dict[tuple, str] = {}
    per_variant: defaultdict[tuple, dict] = defaultdict(dict)
    for r in records:
        if not is_ok(r) and not is_deployment(r):  # failed deployment formats: the Deployment section
            reasons[job_key(r)] = r.get("error") or "failed (no reason recorded)"
            per_variant[job_key(r)][r.get("variant")] = reasons[job_key(r)]
    for key, why in per_variant.items():  # a sweep: say which configurations failed, unless all did for one reason
        configurations = len(manifest.get("variants") or [None])
        if len(set(why.values())) > 1 or (None not in why and len(why) < configurations):
            reasons[key] = "; ".join(f"{variant}: {error}" for variant, error in why.items())
    recorded = {job_key(r) for r in records}
    # The reference job of each (dataset, seed, fold) too, in a run that planned them.
    for key in planned_jobs(manifest):
        if key not in recorded:
            reasons[key] = f"not run (run status: {manifest.get('status')})"
    seeds = defaultdict(list)
    for (dataset_id, seed, fold, framework), why in sorted(reasons.items(), key=lambda item: _job_order(item[0])):
        seeds[(dataset_id, framework, why)].append(split_label(seed if fold is None else (seed, fold)))
    return Table(
        "failed",
        ["dataset", "id", "framework", "seeds", "reason"],
        [[labels.get(i, str(i)), i, f, ", ".join(s), why] for (i, f, why), s in seeds.items()],
    )


def _job_order(key: tuple) -> tuple:
    """A job key in the order of its dataset, seed, fold and framework (a fold None sorts first)."""
    dataset_id, seed, fold, framework = key
    return (dataset_id, seed, -1 if fold is None else fold, framework)
