"""The numbers of a report, from the records of a run: per (dataset, framework) summaries over seeds,
framework against framework, across datasets, ranks, and the kinds of machine the jobs ran on."""

from __future__ import annotations

from collections import defaultdict
from functools import partial

import numpy as np

from distillbench.benchmarks.reporting import stats
from distillbench.benchmarks.running.metrics import retention
from distillbench.benchmarks.store.flags import flag_note
from distillbench.benchmarks.store.metric_registry import HIGHER_IS_BETTER
from distillbench.benchmarks.store.record import is_deployment, is_ok, job_machines, split_key
from distillbench.implementations.roles import REFERENCE, REFERENCES, ROLES, STUDENTS


def dataset_labels(records: list[dict], manifest: dict) -> dict[int, str]:
    names = {d["id"]: d.get("name") for d in manifest.get("datasets", [])}
    names.update({r["dataset_id"]: r["dataset_name"] for r in records if r.get("dataset_name")})
    names = {i: n or f"dataset {i}" for i, n in names.items()}
    twice = {n for n in names.values() if list(names.values()).count(n) > 1}
    return {i: f"{n} ({i})" if n in twice else n for i, n in names.items()}


def run_order(records: list[dict], manifest: dict) -> tuple[list[int], list[str]]:
    datasets = [d["id"] for d in manifest.get("datasets", [])]
    frameworks = list(manifest.get("frameworks", []))
    datasets += sorted({r["dataset_id"] for r in records} - set(datasets))
    frameworks += sorted({r["framework"] for r in records} - set(frameworks))
    return datasets, frameworks


CORRECTED_CI = (
    "With cross-validation (--folds, or an OpenML task's folds), an interval over the (repeat, fold) "
    "results is the corrected resampled t-test's (Nadeau and Bengio 2003): the folds' training sets "
    "overlap, so the variance of the mean is taken as s² (1/J + n_test/n_train), J the number of results, not s²/J."
)


def cross_validated(manifest: dict) -> bool:
    """Whether a run's splits are folds (``--folds``, or OpenML tasks' folds) of some dataset."""
    return bool(manifest.get("folds")) or any(d.get("openml_task") for d in manifest.get("datasets", []))


def ratio_test_train(manifest: dict, dataset_id: int) -> float | None:
    """n_test / n_train of a dataset's splits in a run with folds (--folds, or a task's: n_train is
    the rows outside the test fold, training and validation), for the corrected interval
    (``stats.mean_ci``); None with the holdout split, where the seeds' intervals are plain t-intervals."""
    dataset: dict = next((d for d in manifest.get("datasets", []) if d.get("id") == dataset_id), {})
    folds = (dataset.get("openml_task") or {}).get("folds") or manifest.get("folds")
    if folds is None:
        return None
    rows = dataset.get("rows")
    if rows:
        return rows["test"] / (rows["train"] + rows["val"])
    return 1 / (folds - 1)  # a dataset that failed to load: the folds' nominal sizes


def summarize(records: list[dict], manifest: dict) -> list[dict]:
    """One entry per (dataset, framework) with any ok job: per role, quality (mean and 95% CI over
    seeds, or (seed, fold) splits with folds, noted with its models' sanity flags), retention, KD
    gain, speed-up, parameters, p50 latency, training time, throughput; the reference roles of the
    dataset (the same in every framework's entry) and the distilled student's retention against the
    better reference of each split. ``by_seed`` is keyed by ``record.split_key``; ``test_train`` is
    what corrects every interval of the entry (``ratio_test_train``)."""
    labels = dataset_labels(records, manifest)
    datasets, frameworks = run_order(records, manifest)
    ok: defaultdict[tuple, dict] = defaultdict(dict)  # (dataset, framework, role) -> {split: record}
    failed: defaultdict[tuple, set] = defaultdict(set)  # (dataset, framework) -> splits
    for r in records:
        if is_ok(r):
            ok[(r["dataset_id"], r["framework"], r["role"])][split_key(r)] = r
        elif not is_deployment(r):  # a deployment format that failed fails its own record, not the job
            failed[(r["dataset_id"], r["framework"])].add(split_key(r))
    entries = []
    for dataset_id in datasets:
        for framework in frameworks:
            by_seed = {role: dict(sorted(ok[(dataset_id, framework, role)].items())) for role in ROLES}
            if not by_seed["teacher"]:
                continue
            by_seed |= {role: dict(sorted(ok[(dataset_id, REFERENCE, role)].items())) for role in REFERENCES}
            metric = next(iter(by_seed["teacher"].values()))["primary_metric"]
            test_train = ratio_test_train(manifest, dataset_id)
            ci = partial(stats.mean_ci, test_train=test_train)

            def values(role, key, by_seed=by_seed):
                return [r.get(key) for r in by_seed[role].values()]

            entries.append(
                {
                    "dataset_id": dataset_id,
                    "label": labels[dataset_id],
                    "framework": framework,
                    "metric": metric,
                    "higher_is_better": HIGHER_IS_BETTER[metric],
                    "by_seed": by_seed,
                    "test_train": test_train,
                    "quality": {
                        role: ci([r["metrics"].get(metric) for r in by_seed[role].values()])._replace(
                            note=flag_note(list(by_seed[role].values()))
                        )
                        for role in ROLES + REFERENCES
                    },
                    "retention_best_reference": ci(_best_reference_retention(by_seed, metric)),
                    "retention": {role: ci(values(role, "retention")) for role in STUDENTS},
                    "kd_gain": ci(values("student_kd", "kd_gain")),
                    "speedup": ci(values("student_kd", "speedup")),
                    "n_params": {role: next(iter(values(role, "n_params")), None) for role in ROLES},
                    "latency_p50_us": {role: stats.median(values(role, "latency_p50_us")) for role in ROLES},
                    "train_seconds": {role: stats.mean_ci(values(role, "train_seconds")).mean for role in ROLES},
                    "seeds": f"{len(by_seed['teacher'])}/"
                    f"{len(by_seed['teacher']) + len(failed[(dataset_id, framework)])}",
                }
            )
    return entries


def _best_reference_retention(by_seed: dict, metric: str) -> list[float | None]:
    """Per seed with a distilled student and a reference: its retention against the better reference."""
    better = max if HIGHER_IS_BETTER[metric] else min
    out = []
    for seed, kd in by_seed["student_kd"].items():
        refs = [by_seed[role][seed]["metrics"][metric] for role in REFERENCES if seed in by_seed[role]]
        if refs:
            out.append(retention(kd["metrics"][metric], better(refs), metric))
    return out


def _quality(record: dict) -> float | None:
    return record["metrics"].get(record["primary_metric"])


def framework_rows(entries: list[dict], pairs: list[tuple[str, str]]) -> list[list]:
    """Per pair of frameworks (other, reference), dataset and role: the quality difference paired
    over seeds with its CI, whether it includes 0, and the training-time, latency and throughput ratios."""
    by_key = {(e["dataset_id"], e["framework"]): e for e in entries}
    rows = []
    for other, ref in pairs:
        for e in entries:
            partner = by_key.get((e["dataset_id"], ref))
            if e["framework"] != other or partner is None:
                continue
            for role in ROLES:
                a, b = e["by_seed"][role], partner["by_seed"][role]
                seeds = sorted(a.keys() & b.keys())
                diff = stats.paired_diff_ci(
                    [_quality(a[s]) for s in seeds], [_quality(b[s]) for s in seeds], test_train=e["test_train"]
                )
                agree = (
                    None if diff.low is None or diff.high is None else ("yes" if diff.low <= 0 <= diff.high else "no")
                )

                # timings: same kind of machine only
                timed = [s for s in seeds if a[s].get("machine") == b[s].get("machine")]

                def ratio(key, a=a, b=b, timed=timed):
                    return stats.ratio_of_means([a[s].get(key) for s in timed], [b[s].get(key) for s in timed])

                rows.append(
                    [
                        e["label"],
                        f"{other} vs {ref}",
                        role,
                        e["metric"],
                        diff,
                        agree,
                        ratio("train_seconds"),
                        ratio("latency_p50_us"),
                        ratio("throughput_rows_per_s"),
                    ]
                )
    return rows


def across_rows(entries: list[dict], frameworks: list[str]) -> list[list]:
    """Per framework, over datasets: median retention and KD gain, win/tie/loss of the distilled vs
    the scratch student (on the mean KD gain per dataset) and the Wilcoxon signed-rank test."""
    rows = []
    for framework in frameworks:
        es = [e for e in entries if e["framework"] == framework]
        if not es:
            continue
        gains = [e["kd_gain"].mean for e in es]
        statistic, p = stats.wilcoxon(gains)
        rows.append(
            [
                framework,
                len(es),
                stats.median(e["retention"]["student_kd"].mean for e in es),
                stats.median(e["retention"]["student_scratch"].mean for e in es),
                stats.median(gains),
                "/".join(map(str, stats.win_tie_loss(gains))),
                statistic,
                p,
            ]
        )
    return rows


def rank_methods(entries: list[dict], frameworks: list[str]) -> dict:
    """Ranks of the methods (framework x role) over the datasets where all of them have a result."""
    methods = [(f, role) for f in frameworks for role in ROLES if any(e["framework"] == f for e in entries)]
    by_key = {(e["dataset_id"], e["framework"]): e for e in entries}
    scores, labels = [], []
    for dataset_id in dict.fromkeys(e["dataset_id"] for e in entries):
        row: list = [
            by_key.get((dataset_id, f)) and by_key[(dataset_id, f)]["quality"][role].mean for f, role in methods
        ]
        if all(v is not None for v in row):
            sign = 1 if by_key[(dataset_id, methods[0][0])]["higher_is_better"] else -1
            scores.append([sign * v for v in row])
            labels.append(by_key[(dataset_id, methods[0][0])]["label"])
    names = [f"{f} {role}" for f, role in methods]
    if not scores:
        return {"names": names, "datasets": [], "mean_ranks": [None] * len(names), "friedman": (None, None), "cd": None}
    scores = np.array(scores)
    return {
        "names": names,
        "datasets": labels,
        "mean_ranks": list(stats.ranks(scores).mean(axis=0)),
        "friedman": stats.friedman(scores),
        "cd": stats.nemenyi_cd(len(methods), len(scores)) if len(methods) >= 2 else None,
    }


def machine_kinds(records: list[dict], manifest: dict) -> tuple[bool, str | None]:
    """Whether the ok jobs ran on several kinds of machine, and a note when they did or when they ran
    on another kind than the driver's (e.g. on a Dask cluster): None when all ran on the driver's."""
    kinds = job_machines(records)
    if not kinds or list(kinds.values()) == [manifest.get("environment", {}).get("machine")]:
        return False, None
    names = "; ".join(f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('arch', '?')}" for m in kinds.values())
    mixed = len(kinds) > 1
    return mixed, (
        f"The jobs ran on {len(kinds)} kinds of machine ({names}): timings are put side by side only "
        "within one kind (framework ratios over the seeds whose two jobs ran on the same kind; the timing "
        "figures are left out)."
        if mixed
        else f"The jobs ran on another machine than the driver: {names}."
    )
