"""Compare a candidate run with a baseline run: every (dataset, framework, role, metric) present in
both, marked improved, unchanged or regressed, and the jobs that went missing or failed.

Quality (test metrics, retention, KD gain) is compared against the noise, the seed-to-seed spread.
A cell regressed when the candidate is worse than the baseline by more than both an absolute floor
(per metric; relative to the baseline for the metrics in the target's units) and ``k`` standard
errors of the difference. Seed k is the same split and the same initial weights in every run, so
where the runs share at least two seeds the comparison is paired: the difference is the mean of the
per-seed differences and its standard error their sd / sqrt(n), free of the split-to-split
variation that dominates the spread of each run on its own. Otherwise (no shared seeds, or
``paired=False``) the spreads of both runs are combined (Welch: ``sqrt(sd_b^2 / n_b + sd_c^2 /
n_c)``). With one seed in each run the spread is unknown: the floor alone decides, and the
comparison says so.

One more quality row per (dataset, framework), ``kd_vs_scratch_%``, checks the invariant behind
every distillation claim: the distilled student differs from the scratch student (they start from
the same weights and see the same batches, so they are bit-identical exactly when the teacher has no
effect on the loss). A candidate whose distilled students equal the scratch students in every seed,
when the baseline's did not, regressed: the distillation term was lost (e.g. alpha forced to 1),
whatever the seed noise says about the metrics themselves.

Timing (training seconds, p50 latency at batch 1, throughput at a large batch) is compared as the
ratio of the medians over seeds, against a threshold, with a one-sided Mann-Whitney U test over the
per-seed measurements: a cell regressed when it is slower by more than the threshold and the test
says so at ``alpha`` (with too few seeds for the test to reach ``alpha``, the ratio alone). When the
runs come from different machines (CPU model, cores, architecture, threads, device, Python or
framework versions) the comparison says what differs and timing is advisory: shown, never failing.

Jobs: a (dataset, seed, framework, role) of the baseline that the candidate lacks is *missing*, one
the candidate recorded as failed is *failed*; both are regressions. Jobs only in the candidate are
reported as *new*.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from distillbench.benchmarks.store.run_folder import MANIFEST, RECORDS, framework_label, latest_records, read_manifest, read_records
from distillbench.errors import UserError

ROLE_ORDER = ("teacher", "student_kd", "student_scratch")
# Quality: the test metrics (metrics.HIGHER_IS_BETTER), then the students' numbers derived from them.
DERIVED_QUALITY = ("retention", "kd_gain")
# The distillation invariant: the largest relative difference (%) between the distilled and the
# scratch student of a seed, over their test metrics. At most KD_IDENTICAL is "the same model".
KD_EFFECT = "kd_vs_scratch_%"
KD_IDENTICAL = 1e-7
TIMING_HIGHER_IS_BETTER = {"train_seconds": False, "latency_p50_us": False, "throughput_rows_per_s": True}
TIMING_UNITS = {"train_seconds": "s", "latency_p50_us": "us", "throughput_rows_per_s": "rows/s"}

# The least change that counts, per metric: a number is an absolute difference in the metric's units;
# "N%" is relative to the baseline's mean (for the metrics in the target's units, whose scale differs
# from one dataset to the next). retention and kd_gain are percentages: their floor is in points.
DEFAULT_FLOORS = {
    "accuracy": "0.01", "balanced_accuracy": "0.01", "roc_auc": "0.01", "r2": "0.01",
    "log_loss": "5%", "rmse": "2%", "mae": "2%",
    "retention": "2", "kd_gain": "2",
}
DEFAULT_K = 2.0
DEFAULT_TIMING_THRESHOLD = 0.25  # 25% slower (ratio of medians 1.25)
DEFAULT_ALPHA = 0.05
FAIL_ON = ("quality", "timing", "all", "none")
# What must match for timings to be comparable (packages: the ones on the measured code path).
TIMING_PACKAGES = ("torch", "tensorflow-cpu", "tensorflow", "keras", "numpy")

IMPROVED, UNCHANGED, REGRESSED = "improved", "unchanged", "regressed"


@functools.cache
def quality_directions() -> dict[str, bool]:
    """Whether higher is better, per quality metric. Imported on use: ``metrics`` loads scikit-learn,
    which every `distillbench` command would otherwise pay for when the CLI registers its commands."""
    from distillbench.benchmarks.running.metrics import HIGHER_IS_BETTER

    return {**HIGHER_IS_BETTER, **dict.fromkeys(DERIVED_QUALITY, True)}


@dataclass(frozen=True)
class Thresholds:
    k: float = DEFAULT_K
    floors: dict = field(default_factory=lambda: dict(DEFAULT_FLOORS))
    timing_threshold: float = DEFAULT_TIMING_THRESHOLD
    alpha: float = DEFAULT_ALPHA
    paired: bool = True  # quality: per-seed differences where the runs share seeds

    def floor(self, metric: str, baseline_mean: float) -> float:
        text = str(self.floors.get(metric, "0"))
        if text.endswith("%"):
            return abs(baseline_mean) * float(text[:-1]) / 100.0
        return float(text)


def parse_floor(text: str) -> tuple[str, str]:
    """``METRIC=VALUE`` with VALUE a non-negative number or a percentage ``N%``."""
    metric, sep, value = text.partition("=")
    metric, value = metric.strip(), value.strip()
    if not sep or metric not in quality_directions():
        raise UserError(f"--floor {text!r}: expected METRIC=VALUE with METRIC one of {', '.join(quality_directions())}")
    try:
        number = float(value[:-1] if value.endswith("%") else value)
    except ValueError:
        number = -1.0
    if not math.isfinite(number) or number < 0:
        raise UserError(f"--floor {text!r}: VALUE must be a non-negative number or a percentage like 2%")
    return metric, value


@dataclass
class Row:
    """One (dataset, framework, role, metric) present in both runs."""

    dataset_id: int
    dataset: str
    framework: str
    role: str
    metric: str
    kind: str  # quality | timing
    baseline: list[float]
    candidate: list[float]
    center_b: float  # mean (quality) or median (timing)
    center_c: float
    change: float  # quality: candidate - baseline; timing: slowdown factor (> 1 = slower)
    threshold: float  # quality: the margin used (max of floor and k SE); timing: the ratio threshold
    basis: str  # what set the threshold ("floor", "2.0 SE", "floor only: 1 seed", ...)
    p_value: float | None
    verdict: str
    advisory: bool = False

    @property
    def fails(self) -> bool:
        return self.verdict == REGRESSED and not self.advisory


@dataclass
class JobChange:
    """A job that is not ok in both runs: missing, failed, new, or fixed."""

    dataset_id: int
    dataset: str
    seed: int
    framework: str
    roles: list[str]
    status: str  # missing | failed | new | new, failed | fixed
    error: str | None = None

    @property
    def is_regression(self) -> bool:
        return self.status in ("missing", "failed", "new, failed")


@dataclass
class Comparison:
    baseline_dir: Path
    candidate_dir: Path
    baseline_manifest: dict
    candidate_manifest: dict
    thresholds: Thresholds
    rows: list[Row]
    jobs: list[JobChange]
    machine_differences: list[str]
    notes: list[str]

    @property
    def timing_advisory(self) -> bool:
        return bool(self.machine_differences)

    def regressions(self, fail_on: str) -> tuple[list[Row], list[JobChange]]:
        """The rows and jobs that fail the comparison under ``--fail-on``."""
        if fail_on == "none":
            return [], []
        kinds = {"quality": ("quality",), "timing": ("timing",), "all": ("quality", "timing")}[fail_on]
        return ([r for r in self.rows if r.kind in kinds and r.fails],
                [j for j in self.jobs if j.is_regression])

    def exit_code(self, fail_on: str) -> int:
        rows, jobs = self.regressions(fail_on)
        return 1 if rows or jobs else 0


# ---- loading


def resolve_run(text: str | Path, baselines: Path = Path("results") / "baselines") -> Path:
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


def load_run(path: Path) -> tuple[dict, list[dict]]:
    manifest = read_manifest(path)
    try:
        records = latest_records(read_records(path))
    except (ValueError, KeyError) as exc:
        raise UserError(f"{path / RECORDS}: not a records file ({type(exc).__name__}: {exc})") from None
    return manifest, records


# ---- the machines


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
    kinds = [{repr(sorted((r.get("machine") or {}).items())) for r in records if r.get("status") == "ok"}
             for records in (records_b, records_c)]
    if len(kinds[0] | kinds[1]) <= 1:
        return []
    return [f"the jobs ran on {len(kinds[0])} vs {len(kinds[1])} kinds of machine, not all the same"]


def _record_machine_differences(baseline: list[dict], candidate: list[dict]) -> list[str]:
    """The machines the jobs ran on, as each record says (jobs may run elsewhere than the driver)."""
    def machines(records):
        return {json.dumps(r["machine"], sort_keys=True) for r in records if r.get("status") == "ok" and r.get("machine")}

    b, c = machines(baseline), machines(candidate)
    if not b or not c or b == c:
        return []
    return [f"the jobs ran on {len(b)} machine(s) vs {len(c)}: {'; '.join(sorted(b ^ c))[:300]}"]


def _full_config(config: dict | None) -> dict:
    """A run's config as the current code reads it: fields added since (e.g. ``teacher.kind``) hold
    their defaults, so that a field added later does not read as a change of the pipeline."""
    from distillbench.implementations.spec import spec_from_dict

    try:
        return spec_from_dict(config or {}).to_dict()
    except Exception:  # noqa: BLE001 - a config this code cannot read is compared as written
        return config or {}


def _run_notes(baseline: dict, candidate: dict) -> list[str]:
    notes = []
    config_b, config_c = _full_config(baseline.get("config")), _full_config(candidate.get("config"))
    if config_b != config_c:
        changed = _dict_diff(config_b, config_c)
        notes.append("the pipeline configs differ: " + ("; ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")))
    if baseline.get("suite") != candidate.get("suite"):
        notes.append(f"the suites differ: {baseline.get('suite')} vs {candidate.get('suite')}")
    if baseline.get("deploy", False) != candidate.get("deploy", False):
        notes.append("only the " + ("baseline" if baseline.get("deploy") else "candidate") + " measured the deployment "
                     "formats (ONNX, int8; --no-deploy turns them off): their roles are compared only where both have them")
    if baseline.get("timing_budget_s") != candidate.get("timing_budget_s"):
        notes.append(f"the timing budgets differ: {baseline.get('timing_budget_s')} s vs {candidate.get('timing_budget_s')} s")
    for which, manifest in (("baseline", baseline), ("candidate", candidate)):
        if manifest.get("status") not in (None, "complete"):
            notes.append(f"the {which} run is not complete (status {manifest.get('status')})")
    checksums_b = {d.get("id"): d.get("checksum") for d in baseline.get("datasets") or [] if d.get("checksum")}
    checksums_c = {d.get("id"): d.get("checksum") for d in candidate.get("datasets") or [] if d.get("checksum")}
    changed_data = sorted(i for i in set(checksums_b) & set(checksums_c) if checksums_b[i] != checksums_c[i])
    if changed_data:
        notes.append(f"the data of dataset {', '.join(map(str, changed_data))} differs (checksums)")
    return notes


def _dict_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _dict_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


# ---- the statistics


def _sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def compare_quality(metric: str, baseline: dict[int, float], candidate: dict[int, float], thresholds: Thresholds) -> tuple:
    """(change, margin, basis, verdict) for one quality cell, from the per-seed values of both runs.

    Where the runs share at least two seeds the comparison is paired: seed k is the same split and
    the same initial weights in both runs, so the per-seed differences are free of the split-to-split
    variation, and their spread is the noise (SE = sd(differences) / sqrt(n)). Otherwise the two
    runs' own seed-to-seed spreads are combined (Welch: sqrt(sd_b^2 / n_b + sd_c^2 / n_c)). The change
    must exceed both the floor and k of these standard errors; with one seed per run, the floor alone."""
    mean_b = statistics.fmean(baseline.values())
    shared = sorted(set(baseline) & set(candidate))
    floor = thresholds.floor(metric, mean_b)
    if thresholds.paired and len(shared) >= 2:
        diffs = [candidate[s] - baseline[s] for s in shared]
        change, se, how = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs)), "paired"
    else:
        change = statistics.fmean(candidate.values()) - mean_b
        sd_b, sd_c = _sd(list(baseline.values())), _sd(list(candidate.values()))
        if sd_b is None and sd_c is None:
            se, how = None, None
        else:  # with one seed on one side, that side's spread is taken to be the other's
            sd_b = sd_c if sd_b is None else sd_b
            sd_c = sd_b if sd_c is None else sd_c
            se, how = math.sqrt(sd_b**2 / len(baseline) + sd_c**2 / len(candidate)), "unpaired"
    if se is None:
        margin, basis = floor, "floor only: 1 seed"
    elif thresholds.k * se > floor:
        margin, basis = thresholds.k * se, f"{thresholds.k:g} SE {how}"
    else:
        margin, basis = floor, "floor"
    better = change if quality_directions()[metric] else -change
    verdict = REGRESSED if better < -margin else IMPROVED if better > margin else UNCHANGED
    return change, margin, basis, verdict


def _min_p(n1: int, n2: int) -> float:
    """The smallest one-sided p-value an exact Mann-Whitney U test can give with these sample sizes."""
    return 1.0 / math.comb(n1 + n2, n1)


def compare_timing(metric: str, baseline: list[float], candidate: list[float], thresholds: Thresholds) -> tuple:
    """(slowdown, p, basis, verdict) for one timing cell: the ratio of the medians (> 1 = the
    candidate is slower, whatever the metric's direction) and a one-sided Mann-Whitney U test."""
    from scipy.stats import mannwhitneyu

    med_b, med_c = statistics.median(baseline), statistics.median(candidate)
    higher_better = TIMING_HIGHER_IS_BETTER[metric]
    if med_b <= 0 or med_c <= 0:
        return None, None, "not positive", UNCHANGED
    slowdown = med_b / med_c if higher_better else med_c / med_b
    limit = 1.0 + thresholds.timing_threshold
    testable = _min_p(len(baseline), len(candidate)) <= thresholds.alpha
    if slowdown > limit or slowdown < 1.0 / limit:
        if not testable:
            verdict = REGRESSED if slowdown > limit else IMPROVED
            return slowdown, None, f"ratio only: {len(baseline)} vs {len(candidate)} seeds, too few for the test", verdict
        # "worse" is larger for lower-is-better metrics, smaller for throughput
        slower = "greater" if not higher_better else "less"
        faster = "less" if not higher_better else "greater"
        alternative = slower if slowdown > limit else faster
        p = float(mannwhitneyu(candidate, baseline, alternative=alternative, method="auto").pvalue)
        if p <= thresholds.alpha:
            return slowdown, p, "ratio + test", REGRESSED if slowdown > limit else IMPROVED
        return slowdown, p, "not significant", UNCHANGED
    return slowdown, None, "within threshold", UNCHANGED


# ---- the comparison


def _values(records: list[dict], metric: str, kind: str) -> dict[int, float]:
    """Per seed, the metric's value (finite numbers only)."""
    out = {}
    for r in records:
        if kind == "quality" and metric not in DERIVED_QUALITY:
            value = (r.get("metrics") or {}).get(metric)
        else:
            value = r.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[r["seed"]] = float(value)
    return out


def _metric_names(records: list[dict]) -> list[str]:
    names = []
    for r in records:
        for name in r.get("metrics") or {}:
            if name in quality_directions() and name not in names:
                names.append(name)
    order = list(quality_directions())
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order)) + list(DERIVED_QUALITY)


def _job_changes(baseline: list[dict], candidate: list[dict]) -> list[JobChange]:
    base = {(r["dataset_id"], r["seed"], framework_label(r), r["role"]): r for r in baseline}
    cand = {(r["dataset_id"], r["seed"], framework_label(r), r["role"]): r for r in candidate}
    per_job: dict[tuple, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    errors, names = {}, {}
    candidate_deploys = any(r.get("format") for r in candidate)
    for key in sorted(set(base) | set(cand), key=lambda k: (k[0], k[1], k[2], _role_index(k[3]))):
        b, c = base.get(key), cand.get(key)
        b_ok = b is not None and b.get("status") == "ok"
        c_ok = c is not None and c.get("status") == "ok"
        if c is None and b is not None and b.get("format") and not candidate_deploys:
            continue  # a deployment format of a baseline run with them, the candidate ran with --no-deploy
        if c is None and b is not None:
            status = "missing"
        elif c is not None and not c_ok:
            status = "failed" if b is not None else "new, failed"
        elif b is None:
            status = "new"
        elif not b_ok and c_ok:
            status = "fixed"
        else:
            continue
        job = key[:3]
        per_job[job][status].append(key[3])
        names[job] = next((r.get("dataset_name") for r in (c, b) if r and r.get("dataset_name")), None) or str(key[0])
        if c is not None and not c_ok:
            errors[job] = c.get("error")
    out = []
    for (dataset_id, seed, framework), statuses in per_job.items():
        for status, roles in statuses.items():
            out.append(JobChange(dataset_id, names[(dataset_id, seed, framework)], seed, framework, roles, status,
                                 errors.get((dataset_id, seed, framework)) if "failed" in status else None))
    return out


def _kd_effect(kd: dict, scratch: dict) -> float | None:
    """How far the distilled student is from the scratch student of the same seed: the largest
    relative difference over their test metrics, in percent (0 when they are the same model)."""
    shared = [m for m in kd.get("metrics") or {} if isinstance((kd["metrics"] or {}).get(m), (int, float))
              and isinstance((scratch.get("metrics") or {}).get(m), (int, float))]
    if not shared:
        return None
    return max(100.0 * abs(kd["metrics"][m] - scratch["metrics"][m]) / max(abs(scratch["metrics"][m]), 1e-12)
               for m in shared)


def _distillation_row(cell: tuple, name: str, cells_b: dict, cells_c: dict) -> Row | None:
    """The invariant behind every distillation claim: the distilled student is not the scratch
    student. Both start from the same weights and see the same batches, so they are identical, to
    the last bit, exactly when the teacher has no effect on the loss (alpha = 1, or a lost
    distillation term). Seed noise cannot make every metric of every seed equal; this row catches
    a broken distillation that the seed-to-seed noise hides in the metrics themselves."""
    scratch_cell = (cell[0], cell[1], "student_scratch")
    values = []
    for cells in (cells_b, cells_c):
        scratch = {r["seed"]: r for r in cells.get(scratch_cell, [])}
        per_seed = {r["seed"]: _kd_effect(r, scratch[r["seed"]]) for r in cells[cell] if r["seed"] in scratch}
        values.append({s: v for s, v in per_seed.items() if v is not None})
    base, cand = values
    if not base or not cand:
        return None
    same_b = all(v <= KD_IDENTICAL for v in base.values())
    same_c = all(v <= KD_IDENTICAL for v in cand.values())
    verdict = REGRESSED if same_c and not same_b else IMPROVED if same_b and not same_c else UNCHANGED
    basis = ("distilled = scratch in every seed" if same_c else "distilled != scratch") + " (invariant)"
    mean_b, mean_c = statistics.fmean(base.values()), statistics.fmean(cand.values())
    return Row(cell[0], name, cell[1], cell[2], KD_EFFECT, "quality", list(base.values()), list(cand.values()),
               mean_b, mean_c, mean_c - mean_b, 0.0, basis, None, verdict)


def _role_index(role: str) -> tuple[int, str]:
    """Sort key: the roles in pipeline order, each model's deployment formats after the float ones."""
    for i, base in enumerate(ROLE_ORDER):
        if role == base or role.startswith(base + "_"):
            return (i, role)
    return (len(ROLE_ORDER), role)


def compare_runs(baseline_dir: Path, candidate_dir: Path, thresholds: Thresholds | None = None) -> Comparison:
    thresholds = thresholds or Thresholds()
    manifest_b, records_b = load_run(baseline_dir)
    manifest_c, records_c = load_run(candidate_dir)
    differences = machine_differences(manifest_b, manifest_c) + job_machine_differences(records_b, records_c)
    notes = _run_notes(manifest_b, manifest_c)

    cells_b, cells_c = defaultdict(list), defaultdict(list)
    names = {}
    for records, cells in ((records_b, cells_b), (records_c, cells_c)):
        for r in records:
            if r.get("status") == "ok":
                cells[(r["dataset_id"], framework_label(r), r["role"])].append(r)
                names[r["dataset_id"]] = r.get("dataset_name") or str(r["dataset_id"])

    rows, one_seed = [], False
    shared = sorted(set(cells_b) & set(cells_c), key=lambda k: (names[k[0]], k[0], k[1], _role_index(k[2])))
    for cell in shared:
        group_b, group_c = cells_b[cell], cells_c[cell]
        for kind, metrics in (("quality", _metric_names(group_b + group_c)), ("timing", list(TIMING_HIGHER_IS_BETTER))):
            for metric in metrics:
                values_b, values_c = _values(group_b, metric, kind), _values(group_c, metric, kind)
                if not values_b or not values_c:
                    continue  # not defined for this role (e.g. kd_gain of a teacher) or null on one side
                if kind == "quality":
                    change, threshold, basis, verdict = compare_quality(metric, values_b, values_c, thresholds)
                    centers, p = (statistics.fmean(values_b.values()), statistics.fmean(values_c.values())), None
                    one_seed = one_seed or basis.startswith("floor only")
                else:
                    change, p, basis, verdict = compare_timing(metric, list(values_b.values()), list(values_c.values()),
                                                               thresholds)
                    threshold = 1.0 + thresholds.timing_threshold
                    centers = (statistics.median(values_b.values()), statistics.median(values_c.values()))
                rows.append(Row(cell[0], names[cell[0]], cell[1], cell[2], metric, kind, list(values_b.values()),
                                list(values_c.values()), *centers, change, threshold, basis, p, verdict,
                                advisory=kind == "timing" and bool(differences)))
            if kind == "quality" and cell[2] == "student_kd":
                row = _distillation_row(cell, names[cell[0]], cells_b, cells_c)
                if row is not None:
                    rows.append(row)
    lost = [r for r in rows if r.metric == KD_EFFECT and r.verdict == REGRESSED]
    if lost:
        notes.append(f"in {len(lost)} (dataset, framework) the distilled student equals the scratch student in every seed: "
                     "the teacher had no effect (distill.alpha = 1, or the distillation term of the loss is lost)")
    if one_seed:
        notes.append("some cells have one seed in both runs: their seed-to-seed spread is unknown, so the floor alone "
                     "decides there (run more --seeds for a noise-aware comparison)")
    if any("too few" in r.basis for r in rows):
        notes.append(f"too few seeds for the Mann-Whitney U test at alpha {thresholds.alpha:g} (3 per run are needed "
                     "at 0.05): timing changes beyond the threshold are judged on the ratio of the medians alone")
    if not rows:
        notes.append("the two runs have no (dataset, framework, role) with an ok job in common")
    return Comparison(baseline_dir, candidate_dir, manifest_b, manifest_c, thresholds, rows,
                      _job_changes(records_b, records_c), differences, notes)


# ---- formatting


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
        sd = _sd(values)
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
    metric = row.metric if row.kind == "quality" else f"{row.metric} [{TIMING_UNITS[row.metric]}]"
    return [row.dataset, row.framework, row.role, metric, _spread(row.baseline, row.center_b, row.kind),
            _spread(row.candidate, row.center_c, row.kind), change, threshold, verdict.upper() if row.fails else verdict]


def _table(header: tuple, rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _when(timestamp) -> str:
    return "-" if not timestamp else time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _run_line(label: str, path: Path, manifest: dict) -> str:
    env = manifest.get("environment") or {}
    git = env.get("git") or {}
    machine = env.get("machine") or {}
    commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    return (f"{label}: {path} (run {manifest.get('run_id')}, suite {manifest.get('suite') or 'custom'}, "
            f"seeds {manifest.get('seeds')}, commit {commit}, {_when(manifest.get('started'))}; "
            f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, {manifest.get('threads')} threads)")


JOB_COLUMNS = ("dataset", "seed", "framework", "roles", "status", "reason")


def _job_cells(job: JobChange) -> list[str]:
    roles = "all" if sorted(job.roles) == sorted(ROLE_ORDER) else ", ".join(job.roles)
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
