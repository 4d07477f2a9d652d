"""The record: one JSON object per (dataset, seed, framework, configuration of a sweep, role) in a run
folder's ``records.jsonl``, and the schema version stamped into every record and manifest.

A record stays a plain dict (it is read and written as JSON); ``Record`` declares its fields and
their types, and the helpers below are the one way to ask a record what it is.

Schema versions: 1, records and manifests with no ``schema_version`` (before the field existed);
2, the same fields with ``schema_version``; 3, how each model's training ended (``stop_reason``,
``steps``, ``best_step``, ``final_learning_rate``), the ``flags`` of the sanity checks, and the
reference roles (framework ``reference``); 4, records also carry ``invocation`` and ``job_records``
(below) and the manifest an account of every invocation (``running.runner``); 5, a distilled
student's ``gap``, ``gap_noise`` and ``gap_closed`` and, with a transfer set, its ``transfer_*``
fields and ``labelled_rows``; 6, with ``--folds``, ``fold`` and ``folds`` (absent: the holdout
split). A reader takes any version up to ``SCHEMA_VERSION``
(``run_folder.read_run``) and refuses a newer one.
"""

# No `from __future__ import annotations` here: TypedDict reads NotRequired from the evaluated annotations.
import json
import math
import types
import typing
from typing import Any, NotRequired, TypedDict

SCHEMA_VERSION = 6
OK, FAILED = "ok", "failed"


class Record(TypedDict):
    # Every record has these keys, None where a failed job or a role has no value.
    schema_version: int
    run_id: str | None
    dataset_id: int
    dataset_name: str | None
    task: str | None  # classification | regression
    framework: str
    seed: int
    role: str  # a role of implementations.roles: a model role, "<model role>_<format>", or a reference role
    status: str  # OK | FAILED
    error: str | None  # why it failed: one line
    metrics: dict | None  # the test metrics (store.metric_registry.TEST_METRICS) of this model
    primary_metric: str | None  # the task's primary metric (metric_registry.PRIMARY_METRIC)
    train_seconds: float | None
    train_cpu_seconds: float | None
    epochs: int | None
    latency_p50_us: float | None
    latency_p90_us: float | None
    latency_p99_us: float | None
    throughput_rows_per_s: float | None
    n_params: int | None
    model_bytes: int | None
    macs_per_row: int | None
    retention: float | None  # students and deployment roles: % of the teacher's primary metric
    kd_gain: float | None  # student_kd: % better than student_scratch
    speedup: float | None  # teacher p50 latency / this model's
    compression: float | None  # teacher parameters / this model's
    # Where the job ran and what it ran on (every record of a job that got that far).
    dataset_source: NotRequired[str]
    dataset_checksum: NotRequired[str]
    threads: NotRequired[int | None]
    device: NotRequired[str]
    machine: NotRequired[dict]
    host: NotRequired[str]
    framework_version: NotRequired[str]
    determinism: NotRequired[str]  # the framework's settings for repeatable results (Backend.determinism)
    started: NotRequired[float]
    finished: NotRequired[float]
    traceback: NotRequired[str | None]  # a failed job: the end of the traceback
    # How the model was trained and measured. stop_reason: pipeline.STOP_REASONS; steps: optimiser
    # steps (a tree's boosting iterations, a linear solver's iterations); best_step: those behind the
    # weights kept; final_learning_rate: the rate when training ended (a schedule may lower it).
    stop_reason: NotRequired[str]
    steps: NotRequired[int]
    best_step: NotRequired[int]
    final_learning_rate: NotRequired[float | None]
    flags: NotRequired[list[str]]  # the sanity checks this model fails (store/flags.py); [] when none
    best_epoch: NotRequired[int]
    seconds_per_epoch: NotRequired[float]
    peak_rss_mb: NotRequired[float]
    members: NotRequired[list[dict]]  # an ensemble teacher: each member's epochs, steps, bests and stop_reason
    train_call_path: NotRequired[str]  # how the training ran (Trainer.path: loop, compiled epoch, optimiser)
    held_seconds: NotRequired[float]  # training held while another job of the run was timed (not in train_seconds)
    compress_seconds: NotRequired[float]
    compressor: NotRequired[dict]
    # A distilled student: the teacher's lead over the scratch student on the primary metric (positive:
    # the teacher is better), the test split's noise on that difference (1.96 standard errors of the
    # paired per-row difference), and the % of the lead it closes, null where the lead is within the noise.
    gap: NotRequired[float]
    gap_noise: NotRequired[float]
    gap_closed: NotRequired[float | None]
    # A distilled student with a transfer set ([transfer] kind other than none): its kind, the labelled
    # training rows and the transfer rows it trained on, and the seconds spent making and labelling them.
    transfer_kind: NotRequired[str]
    labelled_rows: NotRequired[int]
    transfer_rows: NotRequired[int]
    transfer_generate_seconds: NotRequired[float]
    transfer_label_seconds: NotRequired[float]
    measure_seconds: NotRequired[float]
    throughput_batch: NotRequired[int]
    call_path: NotRequired[str]
    # A deployment role: the model it converts, the format, and how far its outputs are from the model's.
    model_role: NotRequired[str]
    format: NotRequired[str]
    convert_seconds: NotRequired[float]
    max_abs_diff: NotRequired[float]
    tolerance: NotRequired[float | None]
    agreement: NotRequired[float | None]
    # A sweep: the configuration, and a model reused from an earlier configuration of the job.
    variant: NotRequired[str]
    variant_params: NotRequired[dict]
    train_rows: NotRequired[int | None]
    teacher_reused: NotRequired[bool]
    reused: NotRequired[bool]
    reused_from: NotRequired[str]
    # With --folds K (schema 6): the fold of the seed's K-fold whose rows are the test split, and K;
    # absent in a run with the seeded holdout split (fold None).
    fold: NotRequired[int]
    folds: NotRequired[int]
    task_id: NotRequired[int]  # an OpenML task's split (seed = its repeat): the task (also schema 6)
    # The run folder's bookkeeping (schema 3), stamped by the driver on every record of a job as it
    # writes them: which invocation of `distillbench run` on the folder wrote it (1, then 2, ... with
    # --resume), and how many records the job wrote then. Fewer there: the job is incomplete.
    invocation: NotRequired[int]
    job_records: NotRequired[int]


# The keys every record has, in declaration order.
REQUIRED_FIELDS = tuple(k for k in Record.__annotations__ if k in Record.__required_keys__)


IDENTITY = ("dataset_id", "seed", "framework", "role", "status")  # never null
_TYPES = typing.get_type_hints(Record)


def record_problem(record: object) -> str | None:
    """Why a value read from ``records.jsonl`` is not a record, or None. A record is an object whose
    identity fields are there and not null, and whose declared fields are of their type where not
    null (null is always allowed: a value that is missing or not finite is written as null)."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    missing = [name for name in IDENTITY if record.get(name) is None]
    if missing:
        return f"no {', '.join(missing)}"
    if record["status"] not in (OK, FAILED):
        return f"status: {record['status']!r} is neither {OK!r} nor {FAILED!r}"
    for name, value in record.items():
        if name in _TYPES and value is not None and not _is_a(value, _TYPES[name]):
            return f"{name}: {_shown(value)} is not {_type_name(_TYPES[name])}"
    for name, value in (record.get("metrics") or {}).items():
        if value is not None and not _is_a(value, float):
            return f"metrics.{name}: {_shown(value)} is not a number"
    return None


def _is_a(value: object, hint: Any) -> bool:
    """Whether a JSON value has the declared type (an int is a float; a bool is neither)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_is_a(value, h) for h in typing.get_args(hint) if h is not type(None))
    hint = typing.get_origin(hint) or hint
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: object) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "an object",
        list: "a list",
    }
    options = [h for h in typing.get_args(hint) if h is not type(None)] or [hint]
    return " or ".join(names.get(typing.get_origin(h) or h, str(h)) for h in options)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def new_record(**fields) -> dict[str, Any]:
    """A record of this schema version: every required key (None until set), then ``fields``."""
    return {**dict.fromkeys(REQUIRED_FIELDS), "schema_version": SCHEMA_VERSION, **fields}


def is_ok(record: dict) -> bool:
    return record.get("status") == OK


def is_deployment(record: dict) -> bool:
    """A deployment role's record (the model in another format); its failure fails only itself."""
    return bool(record.get("format"))


SplitKey = int | tuple[int, int]  # a seed, or (seed, fold)


def split_key(record: dict) -> SplitKey:
    """The split a record was tested on: its seed, or (seed, fold) with folds. Two runs' records of
    the same split key saw the same rows (compare pairs by it; a report's intervals are over it)."""
    return record["seed"] if record.get("fold") is None else (record["seed"], record["fold"])


def split_label(split: SplitKey) -> str:
    """A ``split_key`` as people read it: ``3``, or ``3 fold 1``."""
    return str(split) if isinstance(split, int) else f"{split[0]} fold {split[1]}"


def job_key(record: dict) -> tuple[int, int, int | None, str]:
    """(dataset, seed, fold, framework): the job that wrote the record (``running.job.Job.key``);
    fold None for the holdout split."""
    return (record["dataset_id"], record["seed"], record.get("fold"), record["framework"])


def record_key(record: dict) -> tuple:
    """(dataset, seed, fold, framework, configuration of a sweep, role): what a record is the result
    of; a resumed run appends records with the key of an earlier one, which they replace."""
    return (*job_key(record), record.get("variant"), record["role"])


def job_machines(records: list[dict]) -> dict[str, dict]:
    """The kinds of machine the ok records ran on (each record's ``machine``: with ``--executor dask``
    not necessarily the driver's), keyed by a canonical text of each: the one "same machine?" check."""
    return {json.dumps(r["machine"], sort_keys=True): r["machine"] for r in records if is_ok(r) and r.get("machine")}


def framework_label(record: dict) -> str:
    """The framework, and the configuration of a sweep: "torch (temperature=2, alpha=0.3)". Runs are
    compared configuration to configuration; records of a run without a sweep are keyed as before."""
    variant = record.get("variant")
    return record["framework"] if variant is None else f"{record['framework']} ({variant})"
