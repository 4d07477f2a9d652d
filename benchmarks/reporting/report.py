"""The report of a run: ``report.md`` (GitHub-flavoured Markdown), ``report.html`` (one self-contained
file: inline CSS, figures as base64 PNG), ``figures/*.png|svg`` and ``tables/*.csv|tex``.

The report is built once as a list of blocks (headings, paragraphs, tables, figures) and rendered to
Markdown and HTML from that list. Every string is escaped for the format it lands in: dataset names,
notes and error messages are user-uploaded text.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillbench.benchmarks.reporting import figures, stats
from distillbench.benchmarks.running.metrics import HIGHER_IS_BETTER
from distillbench.benchmarks.running.metrics import ratio as _ratio
from distillbench.benchmarks.running.metrics import retention as _retention
from distillbench.benchmarks.store.run_folder import latest_records, read_manifest, read_records
from distillbench.benchmarks.reporting.stats import Estimate
from distillbench.implementations.pipeline import ROLES

STUDENTS = ("student_kd", "student_scratch")
MIN_CD_DATASETS = 5
FIGURE_NAMES = ("quality", "retention_speedup", "framework_time", "latency", "critical_difference", "deployment")
TABLE_NAMES = ("run", "datasets", "results", "frameworks", "across_datasets", "ranks", "failed",
               "deployment", "deployment_summary", "deployment_failed")
FORMATS = ("float32", "onnx", "int8")  # the float model (its role's own record), then its deployment formats
# Only in the report of a sweep (its Sweep section).
SWEEP_FIGURE_NAMES = ("sweep_pareto_params", "sweep_pareto_bytes", "sweep_scaling")
SWEEP_TABLE_NAMES = ("sweep", "sweep_scaling")


# ---------------------------------------------------------------- blocks

@dataclass
class Table:
    name: str  # file stem under tables/
    columns: list[str]
    rows: list[list]  # cells: None, str, int, float or Estimate


@dataclass
class Figure:
    name: str  # file stem under figures/
    caption: str
    png: bytes
    svg: bytes


# ---------------------------------------------------------------- numbers from records

def _labels(records: list[dict], manifest: dict) -> dict[int, str]:
    names = {d["id"]: d.get("name") for d in manifest.get("datasets", [])}
    names.update({r["dataset_id"]: r["dataset_name"] for r in records if r.get("dataset_name")})
    names = {i: n or f"dataset {i}" for i, n in names.items()}
    twice = {n for n in names.values() if list(names.values()).count(n) > 1}
    return {i: f"{n} ({i})" if n in twice else n for i, n in names.items()}


def _order(records: list[dict], manifest: dict) -> tuple[list[int], list[str]]:
    datasets = [d["id"] for d in manifest.get("datasets", [])]
    frameworks = list(manifest.get("frameworks", []))
    datasets += sorted({r["dataset_id"] for r in records} - set(datasets))
    frameworks += sorted({r["framework"] for r in records} - set(frameworks))
    return datasets, frameworks


def summarize(records: list[dict], manifest: dict) -> list[dict]:
    """One entry per (dataset, framework) with any ok job: per role, quality (mean and 95% CI over
    seeds), retention, KD gain, speed-up, parameters, p50 latency, training time, throughput."""
    labels = _labels(records, manifest)
    datasets, frameworks = _order(records, manifest)
    ok = defaultdict(dict)  # (dataset, framework, role) -> {seed: record}
    failed = defaultdict(set)  # (dataset, framework) -> seeds
    for r in records:
        if r["status"] == "ok":
            ok[(r["dataset_id"], r["framework"], r["role"])][r["seed"]] = r
        elif not r.get("format"):  # a deployment format that failed fails its own record, not the job
            failed[(r["dataset_id"], r["framework"])].add(r["seed"])
    entries = []
    for dataset_id in datasets:
        for framework in frameworks:
            by_seed = {role: dict(sorted(ok[(dataset_id, framework, role)].items())) for role in ROLES}
            if not by_seed["teacher"]:
                continue
            metric = next(iter(by_seed["teacher"].values()))["primary_metric"]

            def values(role, key):
                return [r.get(key) for r in by_seed[role].values()]

            entries.append({
                "dataset_id": dataset_id, "label": labels[dataset_id], "framework": framework, "metric": metric,
                "higher_is_better": HIGHER_IS_BETTER[metric], "by_seed": by_seed,
                "quality": {role: stats.mean_ci([r["metrics"].get(metric) for r in by_seed[role].values()])
                            for role in ROLES},
                "retention": {role: stats.mean_ci(values(role, "retention")) for role in STUDENTS},
                "kd_gain": stats.mean_ci(values("student_kd", "kd_gain")),
                "speedup": stats.mean_ci(values("student_kd", "speedup")),
                "n_params": {role: next(iter(values(role, "n_params")), None) for role in ROLES},
                "latency_p50_us": {role: stats.median(values(role, "latency_p50_us")) for role in ROLES},
                "train_seconds": {role: stats.mean_ci(values(role, "train_seconds")).mean for role in ROLES},
                "seeds": f"{len(by_seed['teacher'])}/{len(by_seed['teacher']) + len(failed[(dataset_id, framework)])}",
            })
    return entries


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
                diff = stats.paired_diff_ci([_quality(a[s]) for s in seeds], [_quality(b[s]) for s in seeds])
                agree = None if diff.half is None else ("yes" if diff.low <= 0 <= diff.high else "no")

                timed = [s for s in seeds if a[s].get("machine") == b[s].get("machine")]  # timings: same kind of machine only

                def ratio(key):
                    return stats.ratio_of_means([a[s].get(key) for s in timed], [b[s].get(key) for s in timed])

                rows.append([e["label"], f"{other} vs {ref}", role, e["metric"], diff, agree, ratio("train_seconds"),
                             ratio("latency_p50_us"), ratio("throughput_rows_per_s")])
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
        rows.append([framework, len(es), stats.median(e["retention"]["student_kd"].mean for e in es),
                     stats.median(e["retention"]["student_scratch"].mean for e in es), stats.median(gains),
                     "/".join(map(str, stats.win_tie_loss(gains))), statistic, p])
    return rows


def rank_methods(entries: list[dict], frameworks: list[str]) -> dict:
    """Ranks of the methods (framework x role) over the datasets where all of them have a result."""
    methods = [(f, role) for f in frameworks for role in ROLES if any(e["framework"] == f for e in entries)]
    by_key = {(e["dataset_id"], e["framework"]): e for e in entries}
    scores, labels = [], []
    for dataset_id in dict.fromkeys(e["dataset_id"] for e in entries):
        row = [by_key.get((dataset_id, f)) and by_key[(dataset_id, f)]["quality"][role].mean for f, role in methods]
        if all(v is not None for v in row):
            sign = 1 if by_key[(dataset_id, methods[0][0])]["higher_is_better"] else -1
            scores.append([sign * v for v in row])
            labels.append(by_key[(dataset_id, methods[0][0])]["label"])
    names = [f"{f} {role}" for f, role in methods]
    if not scores:
        return {"names": names, "datasets": [], "mean_ranks": [None] * len(names), "friedman": (None, None), "cd": None}
    scores = np.array(scores)
    return {"names": names, "datasets": labels, "mean_ranks": list(stats.ranks(scores).mean(axis=0)),
            "friedman": stats.friedman(scores),
            "cd": stats.nemenyi_cd(len(methods), len(scores)) if len(methods) >= 2 else None}


# ---------------------------------------------------------------- the report as blocks

def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(value, 60)
    return f"{value:.1f} s" if minutes < 1 else f"{int(minutes)} min {seconds:.0f} s"


def _teacher_text(teacher: dict) -> str:
    """The teacher of a config in a few words, by its kind (a config from before kinds: an MLP)."""
    kind = teacher.get("kind", "mlp")
    if kind == "hist_gradient_boosting":
        return (f"gradient-boosted trees (scikit-learn, max_iter {teacher.get('max_iter')}, learning_rate "
                f"{teacher.get('learning_rate')}, max_leaf_nodes {teacher.get('max_leaf_nodes')})")
    mlp = f"{teacher.get('widths')} {teacher.get('activation')} dropout {teacher.get('dropout')}"
    return {"residual_mlp": f"residual MLP {mlp}", "ensemble": f"ensemble of {teacher.get('members')} MLPs {mlp}"}.get(kind, mlp)


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
        ("suite", manifest.get("suite") or "custom (--datasets)"),
        *([("fallback", f"ran suite {fallback.get('to')} instead of {fallback.get('from')}: {fallback.get('reason')}")]
          if (fallback := manifest.get("fallback")) else []),
        ("status", manifest.get("status")),
        ("command", " ".join(manifest.get("command", []))),
        ("started", _when(manifest.get("started"))),
        ("finished", _when(manifest.get("finished"))),
        ("duration", f"{_seconds(manifest.get('wall_seconds'))} (measured training and inference "
                     f"{_seconds(manifest.get('measured_seconds'))})"),
        ("harness overhead", "-" if overhead is None else f"{100 * overhead:.1f}% of the run's wall time"),
        ("machine", f"{mach.get('cpu', '?')}, {mach.get('cores', '?')} cores, {mach.get('arch', '?')}, "
                    f"{env.get('platform', mach.get('os', '?'))}, host {env.get('hostname', '?')}"),
        ("threads, device", f"{manifest.get('threads')} per framework, {manifest.get('device')}"),
        ("code", f"commit {(git.get('commit') or 'unknown')[:12]}" + (" (dirty: uncommitted changes)" if git.get("dirty") else "")),
        ("versions", f"Python {env.get('python', '?')}; " + ", ".join(f"{k} {v}" for k, v in packages.items())),
        ("frameworks", ", ".join(manifest.get("frameworks", []))),
        ("seeds", ", ".join(map(str, manifest.get("seeds", [])))),
        ("config", f"{config.get('name', '?')}: teacher {_teacher_text(teacher)}; student {student.get('widths')} {student.get('activation')}; "
                   f"alpha {distill.get('alpha')}, T {distill.get('temperature')}, compressors "
                   f"{distill.get('classification_compressor')}/{distill.get('regression_compressor')}; "
                   f"{training.get('epochs')} epochs, batch {training.get('batch_size')}, "
                   f"lr {training.get('learning_rate')}, patience {training.get('patience')}"),
        *([("sweep", f"{len(manifest['variants'])} configurations per job: " + "; ".join(
            f"{path} = {config['sweep'][path]}" for path in manifest.get("sweep_keys") or config.get("sweep") or {}))]
          if manifest.get("variants") and config.get("sweep") else []),
        ("jobs", f"{jobs.get('planned')} planned, {jobs.get('ok')} ok, {jobs.get('failed')} failed, "
                 f"{jobs.get('skipped_as_done', 0)} done by an earlier session"),
        ("timing", f"budget {manifest.get('timing_budget_s')} s per model, job time limit {manifest.get('job_timeout_s')} s"),
    ]
    return Table("run", ["field", "value"], [[k, v] for k, v in fields])


def machine_kinds(records: list[dict], manifest: dict) -> tuple[bool, str | None]:
    """Whether the ok jobs ran on several kinds of machine, and a note when they did or when they ran
    on another kind than the driver's (e.g. on a Dask cluster): None when all ran on the driver's."""
    kinds = {json.dumps(r["machine"], sort_keys=True): r["machine"] for r in records if r["status"] == "ok" and r.get("machine")}
    if not kinds or list(kinds.values()) == [manifest.get("environment", {}).get("machine")]:
        return False, None
    names = "; ".join(f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('arch', '?')}" for m in kinds.values())
    mixed = len(kinds) > 1
    return mixed, (f"The jobs ran on {len(kinds)} kinds of machine ({names}): timings are put side by side only "
                   "within one kind (framework ratios over the seeds whose two jobs ran on the same kind; the timing "
                   "figures are left out)." if mixed else f"The jobs ran on another machine than the driver: {names}.")


def datasets_table(manifest: dict) -> Table:
    rows = []
    for d in manifest.get("datasets", []):
        split = d.get("rows") or {}
        rows.append([d["id"], d.get("name"), d.get("task"), d.get("target"),
                     "/".join(str(split.get(k, "?")) for k in ("train", "val", "test")) if split else None,
                     d.get("features"), d.get("error") or "; ".join([d.get("note") or "", *d.get("notes", [])]).strip("; ")])
    return Table("datasets", ["id", "name", "task", "target", "rows train/val/test", "features", "note"], rows)


def failed_table(records: list[dict], manifest: dict, labels: dict[int, str]) -> Table:
    """Every failed job with its reason (the seeds failing for one reason on one row), and every
    planned job with no record (a run cut short)."""
    reasons, per_variant = {}, defaultdict(dict)
    for r in records:
        if r["status"] != "ok" and not r.get("format"):  # failed deployment formats: the Deployment section
            reasons[(r["dataset_id"], r["seed"], r["framework"])] = r.get("error") or "failed (no reason recorded)"
            per_variant[(r["dataset_id"], r["seed"], r["framework"])][r.get("variant")] = reasons[(r["dataset_id"], r["seed"], r["framework"])]
    for key, why in per_variant.items():  # a sweep: say which configurations failed, unless all did for one reason
        configurations = len(manifest.get("variants") or [None])
        if len(set(why.values())) > 1 or (None not in why and len(why) < configurations):
            reasons[key] = "; ".join(f"{variant}: {error}" for variant, error in why.items())
    recorded = {(r["dataset_id"], r["seed"], r["framework"]) for r in records}
    for d in manifest.get("datasets", []):
        for seed in manifest.get("seeds", []):
            for framework in manifest.get("frameworks", []):
                if (d["id"], seed, framework) not in recorded:
                    reasons[(d["id"], seed, framework)] = f"not run (run status: {manifest.get('status')})"
    seeds = defaultdict(list)
    for (dataset_id, seed, framework), why in sorted(reasons.items()):
        seeds[(dataset_id, framework, why)].append(seed)
    return Table("failed", ["dataset", "id", "framework", "seeds", "reason"],
                 [[labels.get(i, str(i)), i, f, ", ".join(map(str, s)), why] for (i, f, why), s in seeds.items()])


def build(run_dir: Path) -> tuple[str, list]:
    """The report's title and blocks: ("h2", text), ("p", text), Table, Figure."""
    manifest = read_manifest(run_dir)
    all_records = latest_records(read_records(run_dir))
    variants = sweep_variants(all_records, manifest)
    # A sweep: the sections before "Sweep" show its first configuration, the Sweep section all of them.
    records = [r for r in all_records if r.get("variant") == variants[0]["label"]]
    entries = summarize(records, manifest)
    _, frameworks = _order(records, manifest)
    frameworks = [f for f in frameworks if any(e["framework"] == f for e in entries)]
    labels = _labels(records, manifest)
    mixed, machines = machine_kinds(records, manifest)
    blocks = [("h2", "Run"), run_table(manifest), *([("p", machines)] if machines else []),
              ("h2", "Datasets"), datasets_table(manifest)]
    if variants[0]["label"] is not None:
        blocks.append(("p", f"This run is a sweep of {len(variants)} configurations per job. The sections up to "
                            f"Sweep show its first configuration ({variants[0]['label']}); the Sweep section "
                            "compares them all."))

    blocks += [("h2", "Results per dataset and framework"), (
        "p", "Quality is the primary metric on the test split (accuracy for classification, RMSE in the target's "
             "units for regression), mean ± half-width of the 95% Student-t confidence interval over seeds ('-' "
             "with a single seed). Retention: student quality as % of the teacher's (100 = equal, above = "
             "better). KD gain: % improvement of the distilled over the scratch student (positive = distillation "
             "helped). Latency: median over seeds of the p50 at batch 1. Speed-up: teacher p50 / distilled "
             "student p50. Seeds: ok / run.")]
    if entries:
        blocks.append(Table("results", [
            "dataset", "framework", "metric", "teacher", "student_kd", "student_scratch", "retention % (kd)",
            "retention % (scratch)", "KD gain %", "teacher params", "student params", "teacher p50 us",
            "student p50 us", "speed-up", "seeds"],
            [[e["label"], e["framework"], e["metric"], *(e["quality"][r] for r in ROLES),
              *(e["retention"][r] for r in STUDENTS), e["kd_gain"], e["n_params"]["teacher"],
              e["n_params"]["student_kd"], e["latency_p50_us"]["teacher"], e["latency_p50_us"]["student_kd"],
              e["speedup"], e["seeds"]] for e in entries]))
        blocks += [_figure("quality", figures.quality_figure, entries, frameworks,
                           caption="Test quality per dataset of the teacher, the distilled and the scratch student, "
                                   "mean and 95% CI over seeds"),
                   _figure("retention_speedup", figures.retention_speedup_figure, entries, frameworks,
                           caption="Retention of the distilled student vs its inference speed-up over the teacher, "
                                   "one point per dataset and framework (95% CI over seeds)")]
    else:
        blocks.append(("p", "No job finished: there are no results (see Failed jobs)."))

    reference, others = (frameworks[0], frameworks[1:]) if frameworks else (None, [])
    pairs = [(other, reference) for other in others]
    blocks += [("h2", " vs ".join(reversed(frameworks[:2])) if len(frameworks) > 1 else "Frameworks compared")]
    if pairs:
        blocks += [("p", "Quality difference: mean over seeds of the paired difference (same seed = same split "
                         "and initial weights), with its 95% CI; 'agree' says whether the CI includes 0. Ratios "
                         f"are means over seeds of the first framework over {reference}'s (above 1: slower training, "
                         "slower inference, higher throughput)."),
                   Table("frameworks", ["dataset", "frameworks", "role", "metric", "quality difference", "agree",
                                        "training time ratio", "p50 latency ratio", "throughput ratio"],
                         framework_rows(entries, pairs)),
                   *([] if mixed else [_figure("framework_time", figures.framework_time_figure, entries, pairs,
                                               caption=f"{pairs[0][0]} vs {reference}: training time and p50 latency "
                                                       "per dataset and role (mean over seeds), with the line y = x")])]
    else:
        blocks.append(("p", f"Needs results from two frameworks; this run has {', '.join(frameworks) or 'none'}."))

    blocks += [("h2", "Across datasets"), (
        "p", "Per framework, over datasets: medians of the per-dataset means; win/tie/loss of the distilled vs the "
             "scratch student on the mean KD gain; two-sided Wilcoxon signed-rank test of the KD gains against 0 "
             "('-' when no dataset differs).")]
    if entries:
        blocks.append(Table("across_datasets", ["framework", "datasets", "median retention % (kd)",
                                                "median retention % (scratch)", "median KD gain %",
                                                "kd vs scratch win/tie/loss", "Wilcoxon W", "Wilcoxon p"],
                            across_rows(entries, frameworks)))
        ranking = rank_methods(entries, frameworks)
        n, (chi2, p), cd = len(ranking["datasets"]), ranking["friedman"], ranking["cd"]
        blocks += [("p", f"Mean ranks (1 = best) of each framework and role over the {n} datasets where all have a "
                         f"result. Friedman test: " + ("-" if chi2 is None else f"chi2 = {chi2:.4g}, p = {p:.3g}") +
                         "; Nemenyi critical difference (alpha 0.05): " + ("-" if cd is None else f"{cd:.3g}") + "."),
                   Table("ranks", ["method", "mean rank"], [list(x) for x in zip(ranking["names"], ranking["mean_ranks"])])]
        if n >= MIN_CD_DATASETS and cd is not None:
            blocks.append(_figure("critical_difference", figures.cd_figure, ranking["names"], ranking["mean_ranks"], cd,
                                  caption=f"Critical-difference diagram: mean ranks over {n} datasets; methods joined "
                                          f"by a bar are not significantly different (Nemenyi, alpha 0.05; Friedman "
                                          f"p = {'-' if p is None else f'{p:.3g}'})"))
        else:
            blocks.append(("p", f"No critical-difference diagram: it needs at least {MIN_CD_DATASETS} datasets with "
                                f"all results; this run has {n}."))
        blocks += [("h2", "Latency"), ("p", machines) if mixed else
                   _figure("latency", figures.latency_figure, [r for r in records if r["status"] == "ok"], frameworks,
                           caption="Latency at batch 1 per role and framework over datasets and seeds: p50 (boxes) "
                                   "and p99 (crosses)")]

    blocks += deployment_blocks(records, manifest, frameworks, mixed)

    if variants[0]["label"] is not None:
        blocks += sweep_blocks(all_records, manifest, variants, frameworks or _order(all_records, manifest)[1])

    failed = failed_table(all_records, manifest, labels)
    blocks += [("h2", "Failed jobs")]
    blocks.append(failed if failed.rows else ("p", "None: every planned job finished ok."))
    return f"distillbench report: {manifest['run_id']}", blocks


# ---------------------------------------------------------------- deployment formats

def deployment_entries(records: list[dict], manifest: dict) -> list[dict]:
    """Per (dataset, framework, model role, format), ``float32`` being the role's own record: its ok
    seeds' numbers (quality mean ± CI, retention vs the float teacher, medians of size, p50 latency
    and throughput; the largest max |diff| and lowest agreement vs the float model over seeds), and
    per dataset the same model's float32 numbers for the ratios. Only models that have a deployment
    record (a run with --no-deploy has none)."""
    labels = _labels(records, manifest)
    datasets, frameworks = _order(records, manifest)
    deployed = [r for r in records if r.get("format")]
    models = {(r["dataset_id"], r["framework"], r["model_role"]) for r in deployed}
    cells = defaultdict(list)  # (dataset, framework, model role, format) -> records
    for r in records:
        if r.get("format"):
            cells[(r["dataset_id"], r["framework"], r["model_role"], r["format"])].append(r)
        elif (r["dataset_id"], r["framework"], r["role"]) in models:
            cells[(r["dataset_id"], r["framework"], r["role"], "float32")].append(r)
    formats = list(FORMATS) + sorted({r["format"] for r in deployed} - set(FORMATS))
    roles = list(ROLES) + sorted({r["model_role"] for r in deployed} - set(ROLES))
    entries = []
    for dataset_id in datasets:
        for framework in frameworks:
            for role in roles:
                if (dataset_id, framework, role) not in models:
                    continue
                floats = {r["seed"]: r for r in cells[(dataset_id, framework, role, "float32")] if r["status"] == "ok"}
                for fmt in formats:
                    rs = cells.get((dataset_id, framework, role, fmt))
                    if not rs:
                        continue
                    ok = [r for r in rs if r["status"] == "ok"]
                    metric = next((r["primary_metric"] for r in rs if r.get("primary_metric")), None)

                    def values(key, records=ok):
                        return [r.get(key) for r in records if r.get(key) is not None]

                    # Against the same model in float32, seed by seed: quality kept (%), size, speed.
                    pairs = [(r, floats[r["seed"]]) for r in ok if r["seed"] in floats]
                    entries.append({
                        "dataset_id": dataset_id, "label": labels.get(dataset_id, str(dataset_id)),
                        "framework": framework, "role": role, "format": fmt, "metric": metric,
                        "quality": stats.mean_ci([r["metrics"].get(metric) for r in ok]),
                        "retention": stats.mean_ci(values("retention")),
                        "vs_float": stats.mean_ci([_retention(r["metrics"][metric], f["metrics"][metric], metric)
                                                   for r, f in pairs if r["metrics"].get(metric) is not None
                                                   and f["metrics"].get(metric) is not None]),
                        "max_abs_diff": max(values("max_abs_diff"), default=None),
                        "agreement": min(values("agreement"), default=None),
                        "bytes": None if (size := stats.median(values("model_bytes"))) is None else round(size),
                        "size_ratio": stats.median([_ratio(r.get("model_bytes"), f.get("model_bytes")) for r, f in pairs]),
                        "latency_p50_us": stats.median(values("latency_p50_us")),
                        "latency_p99_us": stats.median(values("latency_p99_us")),
                        "speedup": stats.median([_ratio(f.get("latency_p50_us"), r.get("latency_p50_us")) for r, f in pairs]),
                        "throughput": stats.median(values("throughput_rows_per_s")),
                        "throughput_ratio": stats.median([_ratio(r.get("throughput_rows_per_s"),
                                                                f.get("throughput_rows_per_s")) for r, f in pairs]),
                        "convert_seconds": stats.median(values("convert_seconds")),
                        "tolerance": next(iter(values("tolerance")), None),
                        "seeds": f"{len(ok)}/{len(rs)}",
                        "failed": [r for r in rs if r["status"] != "ok"],
                    })
    return entries


def deployment_blocks(records: list[dict], manifest: dict, frameworks: list[str], mixed: bool) -> list:
    """The Deployment section: every model in float32 (the framework's own serving path), exported to
    ONNX (onnxruntime) and quantised to int8, side by side; a summary over datasets; failed formats."""
    from distillbench.implementations.deploy import ONNX_TOLERANCE

    blocks = [("h2", "Deployment"), (
        "p", "Each trained model as it would be deployed: float32 is the framework's own serving path (the numbers "
             "of the sections above); onnx is the model exported to ONNX and run by onnxruntime (torch.onnx / tf2onnx), "
             f"which must reproduce the framework's outputs within {ONNX_TOLERANCE:g} x max(1, max |output|) on the "
             "test split, or its record fails; int8 is post-training quantisation (PyTorch: dynamic quantisation of the "
             "linear layers; TensorFlow: a full-integer TFLite model calibrated on training rows), whose error is what "
             "it costs. Quality: mean ± 95% CI over seeds; retention: % of the float32 teacher's quality; vs float32: "
             "% of the same model's float32 quality (mean over seeds); max |diff|: largest absolute difference of the "
             "outputs (logits or standardised values) from float32 over seeds; agreement: lowest share of test rows "
             "with the same predicted class; bytes: the serialised model (state_dict, .keras, .onnx, .tflite); "
             "latency: median over seeds of the p50 at batch 1; throughput at batch 4096.")]
    entries = deployment_entries(records, manifest)
    if not entries:
        return blocks + [("p", "No deployment formats in this run (it ran with --no-deploy, or no job finished).")]
    blocks.append(Table("deployment", [
        "dataset", "framework", "model", "format", "metric", "quality", "retention %", "vs float32 %", "max |diff|",
        "agreement %", "bytes", "p50 us", "p99 us", "rows/s", "convert s", "seeds"],
        [[e["label"], e["framework"], e["role"], e["format"], e["metric"], e["quality"], e["retention"], e["vs_float"],
          e["max_abs_diff"], None if e["agreement"] is None else 100 * e["agreement"], e["bytes"], e["latency_p50_us"],
          e["latency_p99_us"], e["throughput"], e["convert_seconds"], e["seeds"]] for e in entries]))
    summary = []
    for framework in frameworks:
        for role in dict.fromkeys(e["role"] for e in entries):
            for fmt in dict.fromkeys(e["format"] for e in entries):
                es = [e for e in entries if (e["framework"], e["role"], e["format"]) == (framework, role, fmt)]
                if not es or fmt == "float32":
                    continue
                diffs = [e["max_abs_diff"] for e in es if e["max_abs_diff"] is not None]
                agreements = [e["agreement"] for e in es if e["agreement"] is not None]
                summary.append([framework, role, fmt, len([e for e in es if e["quality"].mean is not None]),
                                stats.median([e["retention"].mean for e in es]), stats.median([e["vs_float"].mean for e in es]),
                                max(diffs, default=None), None if not agreements else 100 * min(agreements),
                                stats.median([e["size_ratio"] for e in es]), stats.median([e["speedup"] for e in es]),
                                stats.median([e["throughput_ratio"] for e in es]),
                                sum(len(e["failed"]) for e in es)])
    blocks += [("p", "Over datasets, per framework, model and format: medians of the per-dataset numbers, against the "
                     "same model in float32 (size: bytes / float32 bytes; p50 speed-up: float32 p50 / format p50; "
                     "throughput: format / float32); the largest max |diff| and the lowest agreement of any dataset."),
               Table("deployment_summary", ["framework", "model", "format", "datasets", "median retention %",
                                            "median vs float32 %", "max |diff|", "min agreement %", "size vs float32",
                                            "p50 speed-up vs float32", "throughput vs float32", "failed records"],
                     summary)]
    if not mixed:
        points = [e for e in entries if e["latency_p50_us"] and e["bytes"] and e["quality"].mean is not None]
        if points:
            blocks.append(_figure("deployment", figures.deployment_figure, points, frameworks, list(FORMATS),
                                  caption="Each model in each format: p50 latency at batch 1 (left) and size in bytes "
                                          "(right) vs quality as % of the float32 teacher's, one point per dataset "
                                          "(mean over seeds), lines joining a model's formats"))
    failed = defaultdict(list)
    for e in entries:
        for r in e["failed"]:
            failed[(e["label"], e["framework"], r["role"], r.get("error") or "failed (no reason recorded)")].append(r["seed"])
    if failed:
        blocks.append(Table("deployment_failed", ["dataset", "framework", "role", "seeds", "reason"],
                            [[label, f, role, ", ".join(map(str, sorted(seeds))), why]
                             for (label, f, role, why), seeds in failed.items()]))
    else:
        blocks.append(("p", "Every deployment format of every model converted, and every ONNX model matched its framework."))
    return blocks


# ---------------------------------------------------------------- sweeps

def sweep_variants(records: list[dict], manifest: dict) -> list[dict]:
    """The configurations of the run in the sweep's order ({"label", "params"}); one with label None
    when the run has no sweep."""
    variants = list(manifest.get("variants") or [])
    known = {v["label"] for v in variants}
    for r in records:
        if r.get("variant") is not None and r["variant"] not in known:
            variants.append({"label": r["variant"], "params": r.get("variant_params") or {}})
            known.add(r["variant"])
    return variants or [{"label": None, "params": {}}]


def sweep_entries(records: list[dict], manifest: dict, variants: list[dict]) -> list[dict]:
    """The report's summary entries (``summarize``) per configuration, with the configuration's number
    (1-based, the sweep's order), label, and the students' sizes and training rows; ordered by
    dataset, framework, configuration."""
    out = []
    for number, variant in enumerate(variants, 1):
        for e in summarize([r for r in records if r.get("variant") == variant["label"]], manifest):
            kd = list(e["by_seed"]["student_kd"].values())
            e.update(number=number, variant=variant["label"], params=variant["params"],
                     student_bytes=next((r.get("model_bytes") for r in kd), None),
                     student_params=next((r.get("n_params") for r in kd), None),
                     train_rows=stats.median([r.get("train_rows") for r in kd]))
            out.append(e)
    datasets, frameworks = _order(records, manifest)
    return sorted(out, key=lambda e: (datasets.index(e["dataset_id"]), frameworks.index(e["framework"]), e["number"]))


def _front_members(entries: list[dict], key: str) -> set[tuple]:
    """(dataset, framework, number) of the configurations on the Pareto front of quality vs ``key``."""
    members = set()
    for dataset_id, framework in dict.fromkeys((e["dataset_id"], e["framework"]) for e in entries):
        es = [e for e in entries if (e["dataset_id"], e["framework"]) == (dataset_id, framework)
              and e[key] is not None and e["quality"]["student_kd"].mean is not None]
        front = figures.pareto_front([(e[key], e["quality"]["student_kd"].mean) for e in es], es[0]["higher_is_better"]) if es else []
        members |= {(dataset_id, framework, es[i]["number"]) for i in front}
    return members


def scaling_fits(records: list[dict], labels: dict[int, str], frameworks: list[str]) -> list[dict]:
    """Per (dataset, framework, role): the (training rows, training seconds) of every ok model trained
    (reused models counted once) and the least-squares fit of log(seconds) on log(rows): slope,
    intercept and R^2 (None with fewer than two distinct row counts)."""
    points = defaultdict(list)
    for r in records:
        if (r["status"] == "ok" and r["role"] in ROLES and not r.get("reused")
                and r.get("train_rows") and r.get("train_seconds")):
            points[(r["dataset_id"], r["framework"], r["role"])].append((r["train_rows"], r["train_seconds"]))
    fits = []
    for (dataset_id, framework, role), ps in sorted(points.items(), key=lambda kv: (
            kv[0][0], frameworks.index(kv[0][1]) if kv[0][1] in frameworks else len(frameworks), ROLES.index(kv[0][2]))):
        x, y = np.log([p[0] for p in ps]), np.log([p[1] for p in ps])
        slope = intercept = r2 = None
        if len(set(x)) >= 2:
            slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
            residual = y - (slope * x + intercept)
            total = float(np.sum((y - y.mean()) ** 2))
            r2 = 1.0 - float(np.sum(residual ** 2)) / total if total > 0 else None
        fits.append({"dataset_id": dataset_id, "label": labels.get(dataset_id, str(dataset_id)), "framework": framework,
                     "role": role, "rows": [p[0] for p in ps], "seconds": [p[1] for p in ps],
                     "slope": slope, "intercept": intercept, "r2": r2})
    return fits


def sweep_blocks(records: list[dict], manifest: dict, variants: list[dict], frameworks: list[str]) -> list:
    """The Sweep section: every configuration per dataset and framework, the Pareto fronts of quality
    against student size, and, when the training rows vary, training time against rows."""
    labels = _labels(records, manifest)
    entries = sweep_entries(records, manifest, variants)
    swept = manifest.get("sweep_keys") or list(dict.fromkeys(k for v in variants for k in v["params"]))
    blocks = [("h2", "Sweep"), (
        "p", f"{len(variants)} configurations per job, the Cartesian product of {', '.join(swept)} (numbered in the "
             "sweep's order): " + "; ".join(f"{i}: {v['label']}" for i, v in enumerate(variants, 1)) + ". Quality is "
             "the primary metric, mean ± 95% CI over seeds; sizes and latency are the distilled student's; 'front' "
             "says whether the configuration's distilled student is on its framework's Pareto front of quality vs "
             "parameters / vs bytes. A model trained once for several configurations (the teacher per teacher "
             "setting, the scratch student per everything but the distillation) is reused with its numbers.")]
    if not entries:
        return blocks + [("p", "No configuration finished: there is nothing to compare (see Failed jobs).")]
    on_params, on_bytes = _front_members(entries, "student_params"), _front_members(entries, "student_bytes")

    def front(e):
        key = (e["dataset_id"], e["framework"], e["number"])
        return "/".join("yes" if key in members else "no" for members in (on_params, on_bytes))

    blocks.append(Table("sweep", [
        "dataset", "framework", "#", "configuration", "metric", "teacher", "student_kd", "student_scratch", "KD gain %",
        "student params", "student bytes", "student p50 us", "kd train s", "scratch train s", "train rows",
        "front params/bytes", "seeds"],
        [[e["label"], e["framework"], e["number"], e["variant"], e["metric"], *(e["quality"][r] for r in ROLES),
          e["kd_gain"], e["student_params"], e["student_bytes"], e["latency_p50_us"]["student_kd"],
          e["train_seconds"]["student_kd"], e["train_seconds"]["student_scratch"], e["train_rows"], front(e), e["seeds"]]
         for e in entries]))
    for key, name, what in (("student_params", "sweep_pareto_params", "parameters"),
                            ("student_bytes", "sweep_pareto_bytes", "size in bytes")):
        points = [{"dataset_id": e["dataset_id"], "label": e["label"], "metric": e["metric"],
                   "higher_is_better": e["higher_is_better"], "framework": e["framework"], "number": e["number"],
                   "x": e[key], "kd": e["quality"]["student_kd"].mean, "kd_half": e["quality"]["student_kd"].half,
                   "scratch": e["quality"]["student_scratch"].mean}
                  for e in entries if e[key] is not None and e["quality"]["student_kd"].mean is not None]
        if points:
            blocks.append(_figure(name, figures.pareto_figure, points, frameworks, f"student {what}",
                                  caption=f"Quality of the distilled student (filled, mean and 95% CI over seeds; the "
                                          f"scratch student hollow) vs the student's {what}, per configuration (the "
                                          f"numbers); the line is each framework's Pareto front"))
        else:
            blocks.append(("p", f"No figure of quality vs student {what}: no configuration has both recorded."))

    blocks.append(("p", "Training time vs training rows (training.train_fraction): per dataset, framework and role, "
                        "the least-squares slope of log(training time) on log(rows) over the configurations and seeds "
                        "(1 = time grows in proportion to the rows; early stopping makes the epochs vary too, and the first model "
                        "a worker trains also pays the framework's warm-up, which weighs on tiny runs)."))
    if "training.train_fraction" not in swept:
        return blocks + [("p", "No training-time scaling figure: this sweep does not vary training.train_fraction.")]
    fits = scaling_fits(records, labels, frameworks)
    fitted = [f for f in fits if f["slope"] is not None]
    if not fitted:
        return blocks + [("p", "No training-time scaling figure: no dataset, framework and role has ok models "
                               "trained on two or more distinct numbers of rows.")]
    blocks.append(Table("sweep_scaling", ["dataset", "framework", "role", "points", "rows min", "rows max",
                                          "slope log(time)/log(rows)", "R^2"],
                        [[f["label"], f["framework"], f["role"], len(f["rows"]), min(f["rows"]), max(f["rows"]),
                          f["slope"], f["r2"]] for f in fits]))
    slopes = "; ".join(f"{f['label']} {f['framework']} {f['role']} {f['slope']:.2f}" for f in fitted)
    blocks.append(_figure("sweep_scaling", figures.scaling_figure, fits, frameworks,
                          caption=f"Training time vs training rows, log-log, with the least-squares line per framework "
                                  f"and role (slopes: {slopes})"))
    return blocks


def _figure(name: str, draw, *args, caption: str) -> Figure:
    return Figure(name, caption, *figures.render(draw, *args))


# ---------------------------------------------------------------- cells

def _number(value, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def cell(value) -> str:
    """A cell as text: '-' for missing; an Estimate as 'mean ± half' (the mean alone with one value)."""
    if value is None:
        return "-"
    if isinstance(value, Estimate):
        if value.mean is None:
            return "-"
        return _number(value.mean) + ("" if value.half is None else f" ± {_number(value.half, 3)}")
    return _number(value)


def _numeric(value) -> bool:
    return isinstance(value, (int, float, Estimate)) and not isinstance(value, bool)


def _numeric_column(table: Table, i: int) -> bool:
    cells = [row[i] for row in table.rows if row[i] is not None]
    return bool(cells) and all(map(_numeric, cells))


def _has_estimates(table: Table) -> list[bool]:
    return [any(isinstance(row[i], Estimate) for row in table.rows) for i in range(len(table.columns))]


def table_csv(table: Table) -> str:
    """Full-precision values; an Estimate column becomes two: the mean and 'ci95' (the half-width)."""
    wide = _has_estimates(table)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([x for c, w in zip(table.columns, wide) for x in ([c, f"{c} ci95"] if w else [c])])
    for row in table.rows:
        writer.writerow([x for v, w in zip(row, wide)
                         for x in ((list(v[:2]) if isinstance(v, Estimate) else [v, None]) if w else [v])])
    return out.getvalue()


TEX_SPECIALS = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "|": r"\textbar{}",
    "<": r"\textless{}", ">": r"\textgreater{}"}


def tex_escape(text: str) -> str:
    return "".join(TEX_SPECIALS.get(c, c) for c in text)


def table_tex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs})."""
    def line(cells):
        return " & ".join(cells) + r" \\"
    align = "".join("r" if _numeric_column(table, i) else "l" for i in range(len(table.columns)))
    return "\n".join([
        r"\begin{tabular}{" + align + "}", r"\toprule",
        line(tex_escape(c) for c in table.columns), r"\midrule",
        *(line(tex_escape(cell(v)).replace("±", r"$\pm$") for v in row) for row in table.rows),
        r"\bottomrule", r"\end{tabular}", ""])


# ---------------------------------------------------------------- Markdown

def md_escape(text: str) -> str:
    """Plain text for GFM: no HTML (< >), no table breaks (|), one line."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", r"\|")
            .replace("\r", " ").replace("\n", " "))


def to_markdown(title: str, blocks: list) -> str:
    lines = [f"# {md_escape(title)}", ""]
    for block in blocks:
        if isinstance(block, Table):
            lines += ["| " + " | ".join(md_escape(c) for c in block.columns) + " |",
                      "|" + "---|" * len(block.columns),
                      *("| " + " | ".join(md_escape(cell(v)) for v in row) + " |" for row in block.rows),
                      "", f"_Table: [tables/{block.name}.csv](tables/{block.name}.csv), "
                          f"[tables/{block.name}.tex](tables/{block.name}.tex)_"]
        elif isinstance(block, Figure):
            lines += [f"![{md_escape(block.caption)}](figures/{block.name}.png)", "",
                      f"_Figure: {md_escape(block.caption)} ([SVG](figures/{block.name}.svg))._"]
        else:
            kind, text = block
            lines.append(f"## {md_escape(text)}" if kind == "h2" else md_escape(text))
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- HTML

CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328; margin: 0; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 24px; border-bottom: 1px solid #d0d7de; padding-bottom: 6px; }
h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-size: 12.5px; }
th, td { border: 1px solid #d0d7de; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfcfd; }
figure { margin: 16px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption, .files { color: #57606a; font-size: 12px; }
"""


def _html_cell(value) -> str:
    return f'<td{" class=num" if _numeric(value) else ""}>{html.escape(cell(value))}</td>'


def to_html(title: str, blocks: list) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Table):
            head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
            body = "\n".join("<tr>" + "".join(_html_cell(v) for v in row) + "</tr>" for row in block.rows)
            parts.append(f'<div class="scroll"><table id="table-{block.name}"><thead><tr>{head}</tr></thead>'
                         f"<tbody>\n{body}\n</tbody></table></div>"
                         f'<p class="files">tables/{block.name}.csv, tables/{block.name}.tex</p>')
        elif isinstance(block, Figure):
            data = base64.b64encode(block.png).decode("ascii")
            caption = html.escape(block.caption)
            parts.append(f'<figure id="figure-{block.name}"><img src="data:image/png;base64,{data}" alt="{caption}">'
                         f"<figcaption>{caption} (figures/{block.name}.png, .svg)</figcaption></figure>")
        else:
            kind, text = block
            parts.append(f"<h2>{html.escape(text)}</h2>" if kind == "h2" else f"<p>{html.escape(text)}</p>")
    body = "\n".join(parts)
    # The policy forbids scripts and any outside resource: the page is data only, even if an escape were missed.
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""


# ---------------------------------------------------------------- files

def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``path`` so that a reader sees the old file or the new one, never a part."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(partial, path)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the report of ``run_dir`` into ``out`` (default reports/<run_id>/); returns report.html's folder."""
    title, blocks = build(Path(run_dir))
    out = Path(out) if out else Path("reports") / read_manifest(run_dir)["run_id"]
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for name in FIGURE_NAMES + SWEEP_FIGURE_NAMES:  # a figure or table not made this time must not linger from an earlier report
        for suffix in (".png", ".svg"):
            (out / "figures" / (name + suffix)).unlink(missing_ok=True)
    for name in TABLE_NAMES + SWEEP_TABLE_NAMES:
        for suffix in (".csv", ".tex"):
            (out / "tables" / (name + suffix)).unlink(missing_ok=True)
    for block in blocks:
        if isinstance(block, Figure):
            write_atomic(out / "figures" / f"{block.name}.png", block.png)
            write_atomic(out / "figures" / f"{block.name}.svg", block.svg)
        elif isinstance(block, Table):
            write_atomic(out / "tables" / f"{block.name}.csv", table_csv(block))
            write_atomic(out / "tables" / f"{block.name}.tex", table_tex(block))
    write_atomic(out / "report.md", to_markdown(title, blocks))
    write_atomic(out / "report.html", to_html(title, blocks))
    return out
