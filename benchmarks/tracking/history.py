"""The trend of chosen metrics across runs (`distillbench history`): a CSV table and a PNG figure (with
``--html`` also a page, ``history_page.py``).

Runs are found in the folders named: a run folder itself, or a folder of run folders (``results/``;
``results/baselines/`` is looked into only when named). Runs are ordered by their start time; the
same run found twice (a run and the baseline made from it) is kept once. Each value is the mean over
the run's ok seeds of one (dataset, framework, role, metric), with its standard deviation.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from datetime import UTC
from pathlib import Path

from distillbench.benchmarks.store.metric_registry import TEST_METRICS
from distillbench.benchmarks.store.record import framework_label, is_ok
from distillbench.benchmarks.store.run_folder import MANIFEST, RECORDS, Run, read_run
from distillbench.errors import UserError
from distillbench.files import replaced_atomically, write_atomic
from distillbench.implementations.roles import FORMATS, ROLE_COLOURS, ROLES, split_role
from distillbench.text import utc_time

# `--metric primary`: each record's own primary metric (metric_registry.PRIMARY_METRIC of its task).
EACH_PRIMARY = "primary"
DEFAULT_METRICS = (EACH_PRIMARY, "kd_gain", "latency_p50_us")
RECORD_METRICS = (
    "retention",
    "kd_gain",
    "speedup",
    "compression",
    "train_seconds",
    "train_cpu_seconds",
    "epochs",
    "latency_p50_us",
    "latency_p90_us",
    "latency_p99_us",
    "throughput_rows_per_s",
    "n_params",
    "model_bytes",
    "peak_rss_mb",
    "seconds_per_epoch",
)
KNOWN_METRICS = (EACH_PRIMARY, *TEST_METRICS, *RECORD_METRICS)
CSV_COLUMNS = (
    "run_id",
    "started",
    "commit",
    "dirty",
    "suite",
    "machine",
    "dataset_id",
    "dataset",
    "framework",
    "role",
    "requested",
    "metric",
    "mean",
    "sd",
    "n",
)


def find_runs(folders: list[Path]) -> list[Path]:
    """Run folders in these folders (each a run folder or a folder of run folders)."""
    runs = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder")
        if (folder / MANIFEST).is_file():
            runs.append(folder)
            continue
        found = sorted(p.parent for p in folder.glob(f"*/{MANIFEST}") if (p.parent / RECORDS).is_file())
        if not found:
            raise UserError(f"{folder}: neither a run folder nor a folder of run folders (no */{MANIFEST})")
        runs += found
    return runs


def _value(record: dict, metric: str) -> tuple[str, float | None]:
    if metric == EACH_PRIMARY:
        metric = record.get("primary_metric") or "?"
    if metric in TEST_METRICS:
        value = (record.get("metrics") or {}).get(metric)
    else:
        value = record.get(metric)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return metric, float(value)
    return metric, None


def ordered_runs(runs: list[Path]) -> list[Run]:
    """These run folders read, each run once (a run and the baseline made from it are the same run),
    ordered by start time: the order of every history."""
    loaded, seen = [], set()
    for path in runs:
        run = read_run(path, skip_damaged=True)  # a damaged line: a warning, the trend goes on
        key = (run.manifest.get("run_id"), run.manifest.get("started"))
        if key not in seen:
            seen.add(key)
            loaded.append(run)
    return sorted(loaded, key=lambda run: run.manifest.get("started") or 0)


def run_fields(manifest: dict) -> dict:
    """What says which run a value comes from: run id, start, commit, suite and machine."""
    env = manifest.get("environment") or {}
    git = env.get("git") or {}
    machine = env.get("machine") or {}
    return {
        "run_id": manifest.get("run_id"),
        "started": manifest.get("started"),
        "commit": (git.get("commit") or "")[:12],
        "dirty": git.get("dirty"),
        "suite": manifest.get("suite"),
        "machine": f"{machine.get('cpu', '?')} x{machine.get('cores', '?')}, {manifest.get('threads')} threads",
    }


def history_rows(runs: list[Path], metrics: list[str]) -> list[dict]:
    """One row per (run, dataset, framework, role, metric): the mean and sd over the run's ok seeds."""
    return [row for run in ordered_runs(runs) for row in run_rows(run, metrics)]


def run_rows(run: Run, metrics: list[str]) -> list[dict]:
    """One run's rows of the history."""
    groups = defaultdict(list)
    names = {}
    for r in run.records:
        if not is_ok(r):
            continue
        names[r["dataset_id"]] = r.get("dataset_name") or str(r["dataset_id"])
        for wanted in metrics:
            metric, value = _value(r, wanted)
            if value is not None:
                groups[(r["dataset_id"], framework_label(r), r["role"], wanted, metric)].append(value)
    fields = run_fields(run.manifest)
    return [
        {
            **fields,
            "dataset_id": dataset_id,
            "dataset": names[dataset_id],
            "framework": framework,
            "role": role,
            "requested": wanted,
            "metric": metric,
            "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values),
        }
        for (dataset_id, framework, role, wanted, metric), values in sorted(
            groups.items(), key=lambda kv: (kv[0][0], kv[0][1], _role(kv[0][2]), metrics.index(kv[0][3]))
        )
    ]


def _role(role: str) -> int:
    return ROLES.index(role) if role in ROLES else len(ROLES)


def write_csv(rows: list[dict], path: Path) -> None:
    with replaced_atomically(path) as partial, open(partial, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "started": utc_time(row["started"]) if row["started"] else ""})


def plot(rows: list[dict], path: Path, order: list[str] | None = None) -> None:
    """One panel per (metric, dataset); one line per (framework, role): colour by role, line style
    by framework; error bars are the sd over seeds. x: run start time, labelled with the commit."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import datetime

    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(r["requested"] for r in rows))  # one row of panels per requested metric
    metrics.sort(key=lambda m: (order or metrics).index(m))
    datasets = sorted({(r["dataset_id"], r["dataset"]) for r in rows})
    runs = sorted({(r["started"] or 0, r["run_id"], r["commit"], bool(r["dirty"])) for r in rows})
    fig, axes = plt.subplots(
        len(metrics), len(datasets), figsize=(4.2 * len(datasets), 3.0 * len(metrics) + 1.2), squeeze=False
    )
    styles = {"torch": "-", "tensorflow": "--"}
    series = defaultdict(list)
    for r in rows:
        series[(r["requested"], r["dataset_id"], r["framework"], r["role"])].append(r)
    ticks = [datetime.fromtimestamp(s, UTC) for s, *_ in runs]
    labels = [
        f"{commit[:7] or '?'}{'*' if dirty else ''}\n{datetime.fromtimestamp(s, UTC):%m-%d %H:%M}"
        for s, _, commit, dirty in runs
    ]
    lowest = {}  # per column, the lowest panel with data: it carries the x labels
    for i, metric in enumerate(metrics):
        for j, (dataset_id, dataset) in enumerate(datasets):
            ax = axes[i][j]
            for (m, d, framework, role), points in sorted(series.items()):
                if m != metric or d != dataset_id:
                    continue
                points.sort(key=lambda p: p["started"] or 0)
                x = [datetime.fromtimestamp(p["started"] or 0, UTC) for p in points]
                y = [p["mean"] for p in points]
                err = [p["sd"] or 0.0 for p in points]
                # A deployment format (role "<role>_<format>"): its model's colour, a marker of its own.
                model_role, fmt = split_role(role)
                ax.errorbar(
                    x,
                    y,
                    yerr=err,
                    marker=FORMATS.get(fmt, "o"),
                    markersize=3,
                    capsize=2,
                    linewidth=1,
                    linestyle=styles.get(framework, ":"),
                    color=ROLE_COLOURS.get(model_role, "tab:gray"),
                    label=f"{framework} {role}",
                )
            if not ax.has_data():  # e.g. accuracy of a regression dataset
                ax.set_visible(False)
                continue
            lowest[j] = ax
            shown = next(r["metric"] for r in rows if r["requested"] == metric and r["dataset_id"] == dataset_id)
            ax.set_title(f"{dataset} ({dataset_id}): {shown}", fontsize=9)
            ax.set_xticks(ticks)
            ax.set_xticklabels([])
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    for ax in lowest.values():
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=6)
    handles, names = [], []
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            if name not in names:
                handles.append(handle)
                names.append(name)
    order = sorted(range(len(names)), key=lambda k: (_role(names[k].split()[-1]), names[k]))
    fig.suptitle(
        "distillbench history: mean over seeds (bars: sd); x: run start (UTC), labelled with the commit (* = dirty)",
        fontsize=9,
    )
    if handles:
        fig.legend(
            [handles[k] for k in order],
            [names[k] for k in order],
            loc="lower center",
            ncol=min(len(names), 3),
            fontsize=8,
            frameon=False,
        )
    legend_rows = (min(len(names), 6) + 2) // 3
    fig.tight_layout(rect=(0, 0.03 + 0.12 * legend_rows / (len(metrics) + 1), 1, 0.97))
    with replaced_atomically(path) as partial:
        fig.savefig(partial, dpi=110, format="png")
    plt.close(fig)


def write_history(
    folders: list[Path], metrics: list[str], out: Path, page: bool = False
) -> tuple[list[Path], list[dict]]:
    """Write OUT/history.csv, OUT/history.png and, with ``page``, OUT/history.html; returns the files and the rows."""
    for metric in metrics:
        if metric not in KNOWN_METRICS:
            raise UserError(f"--metric {metric}: unknown (known: {', '.join(KNOWN_METRICS)})")
    runs = ordered_runs(find_runs(folders))
    metrics = list(dict.fromkeys(metrics))
    rows = [row for run in runs for row in run_rows(run, metrics)]
    if not rows:
        raise UserError(f"no ok records with {', '.join(metrics)} in {len(runs)} run(s)")
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "history.csv", out / "history.png"]
    write_csv(rows, files[0])
    plot(rows, files[1], metrics)
    if page:
        from distillbench.benchmarks.tracking.history_page import history_page

        files.append(out / "history.html")
        write_atomic(files[2], history_page(runs, metrics))
    return files, rows
