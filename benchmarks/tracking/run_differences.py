"""What differs between two runs besides their numbers: the machines, threads and timed packages
(timing is advisory when they differ), and the config, suite, deployment, timing budget, status and
data (notes of a comparison)."""

from __future__ import annotations

from distillbench.benchmarks.store.record import job_machines

# What must match for timings to be comparable (packages: the ones on the measured code path).
TIMING_PACKAGES = ("torch", "tensorflow-cpu", "tensorflow", "keras", "numpy")


def machine_differences(baseline: dict, candidate: dict) -> list[str]:
    """What differs between the two runs' machines, threads and timed packages, one line each."""
    diffs = []
    env_b, env_c = baseline.get("environment") or {}, candidate.get("environment") or {}
    machine_b, machine_c = env_b.get("machine") or {}, env_c.get("machine") or {}
    for key in sorted(set(machine_b) | set(machine_c)):
        if machine_b.get(key) != machine_c.get(key):
            diffs.append(f"{key}: {machine_b.get(key)} vs {machine_c.get(key)}")
    for key in ("threads", "device", "worker_env"):  # worker_env: the OpenMP settings of the workers
        if baseline.get(key) != candidate.get(key):
            diffs.append(f"{key}: {baseline.get(key)} vs {candidate.get(key)}")
    if baseline.get("concurrency", 1) != candidate.get("concurrency", 1):  # jobs timed at once (--workers, dask)
        diffs.append(f"concurrency: {baseline.get('concurrency', 1)} vs {candidate.get('concurrency', 1)}")
    if env_b.get("python") != env_c.get("python"):
        diffs.append(f"python: {env_b.get('python')} vs {env_c.get('python')}")
    packages_b, packages_c = env_b.get("packages") or {}, env_c.get("packages") or {}
    for name in TIMING_PACKAGES:
        if packages_b.get(name) != packages_c.get(name):
            diffs.append(f"{name}: {packages_b.get(name)} vs {packages_c.get(name)}")
    return diffs


def job_machine_differences(records_b: list[dict], records_c: list[dict]) -> list[str]:
    """The kinds of machine the ok jobs ran on (each record's ``machine``: with ``--executor dask``
    not necessarily the driver's): timing counts only when all jobs of both runs ran on one kind."""
    kinds = [set(job_machines(records)) for records in (records_b, records_c)]
    if len(kinds[0] | kinds[1]) <= 1:
        return []
    return [f"the jobs ran on {len(kinds[0])} vs {len(kinds[1])} kinds of machine, not all the same"]


def _full_config(config: dict | None) -> dict:
    """A run's config as the current code reads it: fields added since (e.g. ``teacher.kind``) hold
    their defaults, so that a field added later does not read as a change of the pipeline."""
    from distillbench.implementations.spec import spec_from_dict

    try:
        return spec_from_dict(config or {}).to_dict()
    except Exception:  # noqa: BLE001 - a config this code cannot read is compared as written
        return config or {}


def run_notes(baseline: dict, candidate: dict) -> list[str]:
    notes = []
    config_b, config_c = _full_config(baseline.get("config")), _full_config(candidate.get("config"))
    if config_b != config_c:
        changed = _dict_diff(config_b, config_c)
        notes.append("the pipeline configs differ: " + ("; ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")))
    if baseline.get("suite") != candidate.get("suite"):
        notes.append(f"the suites differ: {baseline.get('suite')} vs {candidate.get('suite')}")
    if baseline.get("deploy", False) != candidate.get("deploy", False):
        notes.append(
            "only the " + ("baseline" if baseline.get("deploy") else "candidate") + " measured the deployment "
            "formats (ONNX, int8; --no-deploy turns them off): their roles are compared only where both have them"
        )
    splits = [_splitting(m) for m in (baseline, candidate)]
    if splits[0] != splits[1]:
        notes.append(
            f"the runs split the data differently ({splits[0]} vs {splits[1]}): their results of the same "
            "seed and fold were not tested on the same rows, and are not comparable split by split"
        )
    if baseline.get("timing_budget_s") != candidate.get("timing_budget_s"):
        notes.append(
            f"the timing budgets differ: {baseline.get('timing_budget_s')} s vs {candidate.get('timing_budget_s')} s"
        )
    for which, manifest in (("baseline", baseline), ("candidate", candidate)):
        if manifest.get("status") not in (None, "complete"):
            notes.append(f"the {which} run is not complete (status {manifest.get('status')})")
    checksums_b = {d.get("id"): d.get("checksum") for d in baseline.get("datasets") or [] if d.get("checksum")}
    checksums_c = {d.get("id"): d.get("checksum") for d in candidate.get("datasets") or [] if d.get("checksum")}
    changed_data = sorted(i for i in set(checksums_b) & set(checksums_c) if checksums_b[i] != checksums_c[i])
    if changed_data:
        notes.append(f"the data of dataset {', '.join(map(str, changed_data))} differs (checksums)")
    return notes


def _splitting(manifest: dict) -> str:
    """How a run split its datasets: the seeded holdout, --folds K, or OpenML tasks (their IDs)."""
    tasks = sorted((d.get("openml_task") or {}).get("id") or 0 for d in manifest.get("datasets") or [])
    if any(tasks):
        return "OpenML tasks " + ",".join(map(str, (t for t in tasks if t)))
    return f"{manifest['folds']}-fold" if manifest.get("folds") else "holdout"


def _dict_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _dict_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out
