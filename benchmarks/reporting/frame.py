"""Runs as a pandas DataFrame (``distillbench.load``, `distillbench export`), and its TabArena layout.

One row per record that ``run_folder.read_run`` keeps: (run, dataset, seed, framework, configuration of
a sweep, role), the latest record of each (a resumed run's superseded records dropped, an incomplete
job's records ``failed``, a partial last line ignored, a damaged line skipped with a warning: as the
report reads a run). Columns:

- identity: ``run_dir``, ``run_id``, ``dataset_id``, ``dataset``, ``task``, ``seed``, ``framework``,
  ``variant`` (the configuration of a sweep, else missing), ``role``, ``model_role`` and ``format``
  (a deployment role's model and format; float32 for a model role), ``status``, ``error``;
- the test metrics under their plain names (``accuracy``, ``rmse``, ...: ``metric_registry``), each
  record field under its own name, a field holding an object flattened one level
  (``machine_cpu``, ``compressor_kind``, ``variant_params_temperature``), a list of names joined with
  ", " (``flags``), anything deeper as JSON text;
- from the manifest: the dataset's ``test_rows``, ``commit``, ``dirty``, ``suite``, ``run_status``,
  ``run_started``, ``python``, ``platform``, ``hostname`` and each package's version as
  ``version_<package>``; ``machine_*`` is the
  machine the job ran on (the record's), the manifest's where the record has none.

Types: times (``started``, ``finished``, ``run_started``) are datetimes in UTC; integer fields are
pandas' nullable ``Int64`` (``dataset_id`` and ``seed``, never missing, ``int64``); true/false fields
``boolean``; names (run, dataset, framework, role, status, versions, ...) categorical; a column with
no value in any row (``variant`` outside a sweep) is all missing. Rows are in the
order of the runs' start, then each run's datasets, seeds, frameworks (references first),
configurations and roles.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from distillbench.benchmarks.store.metric_registry import HIGHER_IS_BETTER, TEST_METRICS
from distillbench.benchmarks.store.record import Record
from distillbench.benchmarks.store.run_folder import Run, read_run
from distillbench.benchmarks.tracking.history import find_runs
from distillbench.implementations.roles import REFERENCE, role_sort_key, split_role

if TYPE_CHECKING:
    import pandas as pd

IDENTITY = (
    "run_dir",
    "run_id",
    "dataset_id",
    "dataset",
    "task",
    "seed",
    "framework",
    "variant",
    "role",
    "model_role",
    "format",
    "status",
    "error",
    "primary_metric",
)
_HINTS = typing.get_type_hints(Record)
_RENAMED = {"dataset_name": "dataset"}


def _is(hint: object, kind: type) -> bool:
    """Whether a field's declared type is ``kind``, or ``kind`` or None."""
    return hint is kind or (isinstance(hint, types.UnionType) and kind in typing.get_args(hint))


# Record fields that are not columns of their own: the metrics and the objects, spread into columns.
_NOT_COLUMNS = {"metrics", *(name for name, hint in _HINTS.items() if _is(hint, dict))}
FIELDS = tuple(
    _RENAMED.get(name, name) for name in _HINTS if name not in _NOT_COLUMNS and _RENAMED.get(name, name) not in IDENTITY
)
MANIFEST_COLUMNS = (
    "test_rows",
    "commit",
    "dirty",
    "suite",
    "run_status",
    "run_started",
    "python",
    "platform",
    "hostname",
)
_TAKEN = {*IDENTITY, *FIELDS, *MANIFEST_COLUMNS}  # a metric of one of these names becomes metric_<name>
TIMES = ("started", "finished", "run_started")
NEVER_MISSING_INTS = ("dataset_id", "seed")
CATEGORIES = (  # the identity's names, and the record's other names from a small set
    *(name for name in IDENTITY if name not in (*NEVER_MISSING_INTS, "error")),
    "stop_reason",
    "dataset_source",
    "device",
    "host",
    "framework_version",
    "determinism",
    "call_path",
    "train_call_path",
    "transfer_kind",
    "compressor_kind",
    "commit",
    "suite",
    "run_status",
    "python",
    "platform",
    "hostname",
)
CATEGORY_PREFIXES = ("machine_", "version_", "compressor_")


INTS = tuple(_RENAMED.get(n, n) for n, h in _HINTS.items() if _is(h, int) and not _is(h, float)) + (
    "machine_cores",
    "test_rows",
)
BOOLS = tuple(_RENAMED.get(n, n) for n, h in _HINTS.items() if _is(h, bool)) + ("dirty",)


def run_folders(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    """The run folders named: each path a run folder, or a folder of run folders (``results/``)."""
    if isinstance(paths, str | Path):
        paths = [paths]
    return find_runs([Path(p) for p in paths])


def load(paths: Iterable[str | Path] | str | Path, skip_damaged: bool = True) -> pd.DataFrame:
    """The records of the runs in ``paths`` (run folders, or folders of run folders) as one DataFrame
    (the module's docstring says its rows and columns). A damaged records line is skipped with a
    warning (its job then reads as incomplete), or with ``skip_damaged=False`` a UserError."""
    import pandas as pd

    runs = sorted(
        (read_run(path, skip_damaged) for path in run_folders(paths)), key=lambda run: run.manifest.get("started") or 0
    )
    rows = [row for run in runs for row in _rows(run)]
    extra = list(
        dict.fromkeys(
            k for row in rows for k in row if k not in IDENTITY + FIELDS + MANIFEST_COLUMNS and k not in TEST_METRICS
        )
    )
    columns = [*IDENTITY, *TEST_METRICS, *FIELDS, *MANIFEST_COLUMNS, *extra]
    frame = pd.DataFrame(rows, columns=columns)
    return _typed(frame)


def _rows(run: Run) -> list[dict]:
    manifest = run.manifest
    env = manifest.get("environment") or {}
    git = env.get("git") or {}
    common = {
        "run_dir": str(run.path),
        "commit": git.get("commit"),
        "dirty": git.get("dirty"),
        "suite": manifest.get("suite"),
        "run_status": manifest.get("status"),
        "run_started": manifest.get("started"),
        "python": env.get("python"),
        "platform": env.get("platform"),
        "hostname": env.get("hostname"),
        **{f"version_{name}": version for name, version in (env.get("packages") or {}).items()},
    }
    machine = {f"machine_{k}": v for k, v in (env.get("machine") or {}).items()}
    datasets = [d["id"] for d in manifest["datasets"]]
    test_rows = {d["id"]: (d.get("rows") or {}).get("test") for d in manifest["datasets"]}
    rows = []
    for record in run.records:
        row = {**common, **machine}
        for name, value in record.items():
            name = _RENAMED.get(name, name)
            if name == "metrics":
                for metric, number in (value or {}).items():
                    row[metric if metric in TEST_METRICS or metric not in _TAKEN else f"metric_{metric}"] = number
            elif isinstance(value, dict):
                row.update({f"{name}_{k}": _flat(v) for k, v in value.items()})
            else:
                row[name] = _flat(value)
        row["model_role"], row["format"] = split_role(record["role"])
        row["test_rows"] = test_rows.get(record["dataset_id"])
        rows.append(row)
    frameworks = [REFERENCE, *manifest["frameworks"]]
    variants = [v.get("label") for v in manifest.get("variants") or []]

    def order(row: dict) -> tuple:
        return (
            _index(datasets, row["dataset_id"]),
            row["seed"],
            -1 if row.get("fold") is None else row["fold"],  # with --folds; none with the holdout split
            _index(frameworks, row["framework"]),
            _index(variants, row.get("variant")),
            role_sort_key(row["role"]),
        )

    return sorted(rows, key=order)


def _index(items: list, item: object) -> int:
    return items.index(item) if item in items else len(items)


def _flat(value: object) -> object:
    """A cell: a list of names joined with ", ", anything else nested as JSON text."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return value


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    for name in frame.columns:
        column = frame[name]
        if name in TIMES:
            frame[name] = pd.to_datetime(column.astype("float64"), unit="s", utc=True)
        elif name in NEVER_MISSING_INTS:
            frame[name] = column.astype("int64")
        elif name in INTS:
            frame[name] = column.astype("Int64")
        elif name in BOOLS:
            frame[name] = column.astype("boolean")
        elif column.isna().all():  # no value (no sweep: no variant): missing, of no type to keep
            continue
        elif name in CATEGORIES or (name.startswith(CATEGORY_PREFIXES) and not _numeric(column)):
            frame[name] = column.astype("category")
        elif name in TEST_METRICS or (_numeric(column) and column.notna().any()):
            frame[name] = column.astype("float64")
    return frame


def _numeric(column: pd.Series) -> bool:
    values = column.dropna()
    return bool(len(values)) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


# ---- the TabArena layout
#
# TabArena (github.com/autogluon/tabrepo, tabrepo/tabarena/tabarena.py, class TabArena) reads a table of
# results with one row per method, task and fold: its defaults are method_col="method", task_col="task",
# error_col="metric_error" (lower is better, never negative) and the extra columns it averages,
# "time_train_s" and "time_infer_s"; the AutoML benchmark's and AutoGluon's evaluation tables
# (autogluon-bench, evaluation/constants.py) name the fold "fold" and the metric "metric".
TABARENA_COLUMNS = (
    "method",
    "task",
    "fold",
    "metric",
    "metric_error",
    "time_train_s",
    "time_infer_s",
    "dataset_id",
    "framework",
    "variant",
    "role",
    "run_id",
)


def tabarena(frame: pd.DataFrame) -> pd.DataFrame:
    """``load``'s table in TabArena's layout: one row per ok model (a failed one is left out, as
    TabArena expects of a missing result) with ``method`` = framework/role and the configuration of a
    sweep in brackets, ``task`` = the dataset, ``fold`` = the seed, ``metric`` = the primary metric and
    ``metric_error`` its error (1 - value where higher is better, the value itself where lower is),
    ``time_train_s`` = train_seconds and ``time_infer_s`` = the seconds to predict the test split at
    the throughput measured (test_rows / throughput_rows_per_s)."""
    import pandas as pd

    ok = frame[frame["status"] == "ok"]
    method = ok["framework"].astype("string") + "/" + ok["role"].astype("string")
    variant = ok["variant"].astype("string")
    method = method.where(variant.isna(), method + " (" + variant + ")")
    metric = ok["primary_metric"].astype("string")
    value = pd.Series(
        [ok.at[i, m] if isinstance(m, str) and m in ok else float("nan") for i, m in metric.items()],
        index=ok.index,
        dtype="float64",
    )
    higher = metric.map(lambda m: HIGHER_IS_BETTER.get(m, False)).fillna(False).astype(bool)
    out = pd.DataFrame(
        {
            "method": method.astype("category"),
            "task": ok["dataset"].astype("string").fillna(ok["dataset_id"].astype("string")).astype("category"),
            "fold": ok["seed"],
            "metric": metric.astype("category"),
            "metric_error": value.where(~higher, 1 - value),
            "time_train_s": ok["train_seconds"],
            "time_infer_s": (ok["test_rows"] / ok["throughput_rows_per_s"]).astype("float64"),
            "dataset_id": ok["dataset_id"],
            "framework": ok["framework"],
            "variant": ok["variant"],
            "role": ok["role"],
            "run_id": ok["run_id"],
        }
    )
    return out.reset_index(drop=True)
