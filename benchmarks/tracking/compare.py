"""Compare a candidate run with a baseline run: every (dataset, framework, role, metric) present in
both, marked improved, unchanged or regressed, and the jobs that went missing or failed.

The verdict of each quality and timing cell (the noise-aware thresholds and tests) is ``verdicts.py``;
what else differs between the runs (machines: timing is then advisory; config, data) is
``run_differences.py``; the comparison as text or Markdown is ``comparison_text.py``.

One more quality row per (dataset, framework), ``kd_vs_scratch_%``, checks the invariant behind
every distillation claim: the distilled student differs from the scratch student (they start from
the same weights and see the same batches, so they are bit-identical exactly when the teacher has no
effect on the loss). A candidate whose distilled students equal the scratch students in every seed,
when the baseline's did not, regressed: the distillation term was lost (e.g. alpha forced to 1),
whatever the seed noise says about the metrics themselves.

Jobs: a (dataset, seed, framework, role) of the baseline that the candidate lacks is *missing*, one
the candidate recorded as failed is *failed*; both are regressions. Jobs only in the candidate are
reported as *new*. A metric that is a number in the baseline and null or absent in the candidate's
ok record of the same seed (e.g. NaN, written as null) is *lost*: a regression of its kind, never
advisory, whatever the numbers of the other seeds.

Flags (``store/flags.py``): a (dataset, framework, role) whose models carry a flag in more seeds of
the candidate than of the baseline is reported as *newly* flagged (e.g. it newly ends on its training
budget, or newly falls below the linear reference), one with fewer as *cleared*. They are reported,
not failed on: a model ending on its budget says its numbers may be unconverged, which the quality
rows judge. A baseline from before flags existed is not compared on them.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from distillbench.benchmarks.store.flags import FLAGS
from distillbench.benchmarks.store.metric_registry import DERIVED_QUALITY, TEST_METRICS, TIMING_METRICS
from distillbench.benchmarks.store.record import (
    SplitKey,
    framework_label,
    is_deployment,
    is_ok,
    split_key,
    split_label,
)
from distillbench.benchmarks.store.run_folder import read_run
from distillbench.benchmarks.tracking.run_differences import job_machine_differences, machine_differences, run_notes
from distillbench.benchmarks.tracking.verdicts import (
    IMPROVED,
    REGRESSED,
    UNCHANGED,
    Thresholds,
    compare_quality,
    compare_timing,
)
from distillbench.implementations.roles import role_sort_key

# The distillation invariant: the largest relative difference (%) between the distilled and the
# scratch student of a seed, over their test metrics. At most KD_IDENTICAL is "the same model".
KD_EFFECT = "kd_vs_scratch_%"
KD_IDENTICAL = 1e-7


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
    center_c: float | None  # None: the candidate lost the metric in every seed
    change: float | None  # quality: candidate - baseline; timing: slowdown factor (> 1 = slower); None: lost
    threshold: float  # quality: the margin used (max of floor and k SE); timing: the ratio threshold
    basis: str  # what set the threshold ("floor", "2.0 SE", "floor only: 1 seed", ...)
    p_value: float | None
    verdict: str
    advisory: bool = False
    # splits (record.split_key: seeds, or (seed, fold)) whose ok candidate record has no number where
    # the baseline had one
    lost: tuple = ()

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
    fold: int | None = None  # with --folds: the fold of the seed; None: the holdout split

    @property
    def is_regression(self) -> bool:
        return self.status in ("missing", "failed", "new, failed")


@dataclass
class FlagChange:
    """A flag raised in more (newly) or fewer (cleared) seeds of a (dataset, framework, role)."""

    dataset_id: int
    dataset: str
    framework: str
    role: str
    flag: str
    baseline: int  # seeds flagged
    candidate: int
    seeds: int  # seeds of the candidate

    @property
    def status(self) -> str:
        return "newly" if self.candidate > self.baseline else "cleared"


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
    flags: list[FlagChange]

    @property
    def timing_advisory(self) -> bool:
        return bool(self.machine_differences)

    def regressions(self, fail_on: str) -> tuple[list[Row], list[JobChange]]:
        """The rows and jobs that fail the comparison under ``--fail-on``."""
        if fail_on == "none":
            return [], []
        kinds = {"quality": ("quality",), "timing": ("timing",), "all": ("quality", "timing")}[fail_on]
        return ([r for r in self.rows if r.kind in kinds and r.fails], [j for j in self.jobs if j.is_regression])

    def exit_code(self, fail_on: str) -> int:
        rows, jobs = self.regressions(fail_on)
        return 1 if rows or jobs else 0


# ---- the comparison


def _values(records: list[dict], metric: str, kind: str) -> dict[SplitKey, float]:
    """Per split (``record.split_key``: the seed, or (seed, fold)), the metric's value (finite numbers
    only): the two runs' values of the same split are paired."""
    out = {}
    for r in records:
        if kind == "quality" and metric not in DERIVED_QUALITY:
            value = (r.get("metrics") or {}).get(metric)
        else:
            value = r.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[split_key(r)] = float(value)
    return out


def _metric_names(records: list[dict]) -> list[str]:
    """The quality metrics of these records, in the registry's order."""
    names = {name for r in records for name in r.get("metrics") or {}}
    return [name for name in TEST_METRICS if name in names] + list(DERIVED_QUALITY)


def _job_changes(baseline: list[dict], candidate: list[dict]) -> list[JobChange]:
    def key_of(r: dict) -> tuple:  # (dataset, seed, fold, framework and configuration, role)
        return (r["dataset_id"], r["seed"], r.get("fold"), framework_label(r), r["role"])

    def order(k: tuple) -> tuple:
        return (k[0], k[1], -1 if k[2] is None else k[2], k[3], role_sort_key(k[4]))

    base, cand = {key_of(r): r for r in baseline}, {key_of(r): r for r in candidate}
    per_job: dict[tuple, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    errors, names = {}, {}
    candidate_deploys = any(is_deployment(r) for r in candidate)
    for key in sorted(set(base) | set(cand), key=order):
        b, c = base.get(key), cand.get(key)
        b_ok = b is not None and is_ok(b)
        c_ok = c is not None and is_ok(c)
        if c is None and b is not None and is_deployment(b) and not candidate_deploys:
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
        job = key[:4]
        per_job[job][status].append(key[4])
        names[job] = next((r.get("dataset_name") for r in (c, b) if r and r.get("dataset_name")), None) or str(key[0])
        if c is not None and not c_ok:
            errors[job] = c.get("error")
    out = []
    for job, statuses in per_job.items():
        dataset_id, seed, fold, framework = job
        for status, roles in statuses.items():
            error = errors.get(job) if "failed" in status else None
            out.append(JobChange(dataset_id, names[job], seed, framework, roles, status, error, fold))
    return out


def _kd_effect(kd: dict, scratch: dict) -> float | None:
    """How far the distilled student is from the scratch student of the same seed: the largest
    relative difference over their test metrics, in percent (0 when they are the same model)."""
    shared = [
        m
        for m in kd.get("metrics") or {}
        if isinstance((kd["metrics"] or {}).get(m), (int, float))
        and isinstance((scratch.get("metrics") or {}).get(m), (int, float))
    ]
    if not shared:
        return None
    return max(
        100.0 * abs(kd["metrics"][m] - scratch["metrics"][m]) / max(abs(scratch["metrics"][m]), 1e-12) for m in shared
    )


def _distillation_row(cell: tuple, name: str, cells_b: dict, cells_c: dict) -> Row | None:
    """The invariant behind every distillation claim: the distilled student is not the scratch
    student. Both start from the same weights and see the same batches, so they are identical, to
    the last bit, exactly when the teacher has no effect on the loss (alpha = 1, or a lost
    distillation term). Seed noise cannot make every metric of every seed equal; this row catches
    a broken distillation that the seed-to-seed noise hides in the metrics themselves."""
    scratch_cell = (cell[0], cell[1], "student_scratch")
    values = []
    for cells in (cells_b, cells_c):
        scratch = {split_key(r): r for r in cells.get(scratch_cell, [])}
        per_seed = {split_key(r): _kd_effect(r, scratch[split_key(r)]) for r in cells[cell] if split_key(r) in scratch}
        values.append({s: v for s, v in per_seed.items() if v is not None})
    base, cand = values
    if not base or not cand:
        return None
    same_b = all(v <= KD_IDENTICAL for v in base.values())
    same_c = all(v <= KD_IDENTICAL for v in cand.values())
    verdict = REGRESSED if same_c and not same_b else IMPROVED if same_b and not same_c else UNCHANGED
    basis = ("distilled = scratch in every seed" if same_c else "distilled != scratch") + " (invariant)"
    mean_b, mean_c = statistics.fmean(base.values()), statistics.fmean(cand.values())
    return Row(
        cell[0],
        name,
        cell[1],
        cell[2],
        KD_EFFECT,
        "quality",
        list(base.values()),
        list(cand.values()),
        mean_b,
        mean_c,
        mean_c - mean_b,
        0.0,
        basis,
        None,
        verdict,
    )


def _flag_changes(shared: list[tuple], names: dict, cells_b: dict, cells_c: dict) -> list[FlagChange]:
    out = []
    for cell in shared:
        if not all("flags" in r for r in cells_b[cell]):  # a baseline from before flags existed
            continue
        for flag in FLAGS:
            counts = [sum(flag in (r.get("flags") or []) for r in cells[cell]) for cells in (cells_b, cells_c)]
            if counts[0] != counts[1]:
                out.append(
                    FlagChange(
                        cell[0], names[cell[0]], cell[1], cell[2], flag, counts[0], counts[1], len(cells_c[cell])
                    )
                )
    return out


def compare_runs(baseline_dir: Path, candidate_dir: Path, thresholds: Thresholds | None = None) -> Comparison:
    thresholds = thresholds or Thresholds()
    run_b, run_c = read_run(baseline_dir), read_run(candidate_dir)
    (manifest_b, records_b), (manifest_c, records_c) = (run_b.manifest, run_b.records), (run_c.manifest, run_c.records)
    differences = machine_differences(manifest_b, manifest_c) + job_machine_differences(records_b, records_c)
    notes = run_notes(manifest_b, manifest_c)

    cells_b: defaultdict[tuple, list[dict]] = defaultdict(list)
    cells_c: defaultdict[tuple, list[dict]] = defaultdict(list)
    names = {}
    for records, cells in ((records_b, cells_b), (records_c, cells_c)):
        for r in records:
            if is_ok(r):
                cells[(r["dataset_id"], framework_label(r), r["role"])].append(r)
                names[r["dataset_id"]] = r.get("dataset_name") or str(r["dataset_id"])

    seeds_c = {cell: {split_key(r) for r in group} for cell, group in cells_c.items()}
    rows, one_seed = [], False
    shared = sorted(set(cells_b) & set(cells_c), key=lambda k: (names[k[0]], k[0], k[1], role_sort_key(k[2])))
    for cell in shared:
        group_b, group_c = cells_b[cell], cells_c[cell]
        for kind, metrics in (("quality", _metric_names(group_b + group_c)), ("timing", list(TIMING_METRICS))):
            for metric in metrics:
                values_b, values_c = _values(group_b, metric, kind), _values(group_c, metric, kind)
                lost = tuple(sorted(s for s in values_b if s in seeds_c[cell] and s not in values_c))
                if lost:  # a number in the baseline, null or absent in the candidate's ok record of that seed
                    center = statistics.fmean if kind == "quality" else statistics.median
                    c_c = center(values_c.values()) if values_c else None
                    lost_in = f"lost in seed {', '.join(map(split_label, lost))}"
                    judged = (center(values_b.values()), c_c, None, 0.0, lost_in, None, REGRESSED)
                elif not values_b or not values_c:
                    continue  # not defined for this role (e.g. kd_gain of a teacher), or new in the candidate
                elif kind == "quality":
                    change, threshold, basis, verdict = compare_quality(metric, values_b, values_c, thresholds)
                    centers = statistics.fmean(values_b.values()), statistics.fmean(values_c.values())
                    judged = (*centers, change, threshold, basis, None, verdict)
                    one_seed = one_seed or basis.startswith("floor only")
                else:
                    change, p, basis, verdict = compare_timing(
                        metric, list(values_b.values()), list(values_c.values()), thresholds
                    )
                    centers = statistics.median(values_b.values()), statistics.median(values_c.values())
                    judged = (*centers, change, 1.0 + thresholds.timing_threshold, basis, p, verdict)
                center_b, center_c, change, threshold, basis, p, verdict = judged
                rows.append(
                    Row(
                        cell[0],
                        names[cell[0]],
                        cell[1],
                        cell[2],
                        metric,
                        kind,
                        list(values_b.values()),
                        list(values_c.values()),
                        center_b,
                        center_c,
                        change,
                        threshold,
                        basis,
                        p,
                        verdict,
                        advisory=kind == "timing" and bool(differences) and not lost,
                        lost=lost,
                    )
                )
            if kind == "quality" and cell[2] == "student_kd":
                row = _distillation_row(cell, names[cell[0]], cells_b, cells_c)
                if row is not None:
                    rows.append(row)
    lost = [r for r in rows if r.metric == KD_EFFECT and r.verdict == REGRESSED]
    if lost:
        notes.append(
            f"in {len(lost)} (dataset, framework) the distilled student equals the scratch student in every seed: "
            "the teacher had no effect (distill.alpha = 1, or the distillation term of the loss is lost)"
        )
    if any(r.lost for r in rows):
        notes.append(
            f"{sum(bool(r.lost) for r in rows)} rows lost a metric: a number in the baseline is null or "
            "absent in the candidate's ok records (e.g. a metric that became NaN): each is a regression"
        )
    if one_seed:
        notes.append(
            "some cells have one seed in both runs: their seed-to-seed spread is unknown, so the floor alone "
            "decides there (run more --seeds for a noise-aware comparison)"
        )
    if any("too few" in r.basis for r in rows):
        notes.append(
            f"too few seeds for the Mann-Whitney U test at alpha {thresholds.alpha:g} (3 per run are needed "
            "at 0.05): timing changes beyond the threshold are judged on the ratio of the medians alone"
        )
    if not rows:
        notes.append("the two runs have no (dataset, framework, role) with an ok job in common")
    return Comparison(
        baseline_dir,
        candidate_dir,
        manifest_b,
        manifest_c,
        thresholds,
        rows,
        _job_changes(records_b, records_c),
        differences,
        notes,
        _flag_changes(shared, names, cells_b, cells_c),
    )
