"""One benchmark job: a pure function of (config, dataset, seed, framework) returning its records.

A job trains the teacher, fits the compressor, trains the distilled and the scratch student, then,
with no training left running, measures each model: test quality, latency and throughput, size.
The job of framework ``REFERENCE`` fits the reference models instead (``implementations/
references.py``), once per (dataset, seed); the framework jobs of that (dataset, seed) get their
primary metric (``Job.references``) and flag the models that fall below them (``store/flags.py``).
Whatever goes wrong inside is caught and returned as ``status: failed`` records with the reason, so
a caller never loses the run to one job.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import resource
import socket
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from distillbench.benchmarks.running import keep, metrics, timing
from distillbench.benchmarks.running.keep import Made
from distillbench.benchmarks.running.quiet import Quiet
from distillbench.benchmarks.store.flags import model_flags
from distillbench.benchmarks.store.metric_registry import PRIMARY_METRIC
from distillbench.benchmarks.store.record import FAILED, OK, new_record
from distillbench.datasets.builtin import dataset_source
from distillbench.env import machine
from distillbench.implementations.compressors import softmax
from distillbench.implementations.deploy import check_tolerance
from distillbench.implementations.pipeline import Data, Pipeline, Served, labelled_data
from distillbench.implementations.roles import REFERENCE, REFERENCES, ROLES
from distillbench.implementations.spec import GENERATORS, TransferSpec, Variant, spec_from_dict
from distillbench.implementations.transfer import TransferSet


@dataclass(frozen=True)
class Job:
    dataset_id: int
    seed: int
    framework: str
    config: dict  # PipelineSpec.to_dict()
    target: str | None = None
    threads: int | None = None
    device: str = "cpu"
    cache: str | None = None  # OpenML cache folders, as the datasets layer resolves them
    source: str | None = None
    timing_budget: float = 2.0  # seconds of latency calls per model; throughput gets half
    deploy: bool = True  # also measure each model in its deployment formats (``Backend.deployments``)
    quiet: str | None = None  # the run's folder of timing locks (``quiet.py``); None: a job alone
    # The primary metric of each reference role on this (dataset, seed), for the sanity flags; None
    # when there is none (the reference job itself, or one that failed).
    references: dict | None = None
    # Where to keep the job's models and their test predictions (``keep.py``; the run folder's
    # ``models`` and ``predictions``); None: not kept.
    models: str | None = None
    predictions: str | None = None
    # With --folds K: the fold of the seed's K-fold whose rows are the test split, and K; None: the
    # seed's holdout split.
    fold: int | None = None
    folds: int | None = None
    task: int | None = None  # an OpenML task whose split (repeat = seed, fold) this job runs

    @property
    def key(self) -> tuple[int, int, int | None, str]:
        """(dataset, seed, fold, framework): ``store.record.job_key`` of its records."""
        return (self.dataset_id, self.seed, self.fold, self.framework)

    @property
    def name(self) -> str:
        """The job in a file or folder name: ``<dataset>-<seed>[-fold<k>]-<framework>``."""
        fold = "" if self.fold is None else f"-fold{self.fold}"
        return f"{self.dataset_id}-{self.seed}{fold}-{self.framework}"


def _peak_rss_reset() -> None:
    """Reset the process's peak-RSS counter, so each role reports its own peak (Linux)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ending(fit) -> dict:
    """How a training ended, as records say it."""
    ending = {name: getattr(fit, name) for name in ("epochs", "best_epoch", "steps", "best_step", "stop_reason")}
    return {**ending, "final_learning_rate": fit.learning_rate}


def _train(fit_role, backend, quiet: Quiet):
    """Run a training call; its model, FitResult and cost. The time it was held while another job
    was timed is not training time: it is recorded apart (``held_seconds``). ``backend`` None: a
    model outside the frameworks (a reference)."""
    _peak_rss_reset()
    wall, cpu, held = time.perf_counter(), time.process_time(), quiet.held
    model, fit = fit_role()
    if backend is not None:
        backend.synchronize()
    held = quiet.held - held
    wall, cpu = time.perf_counter() - wall - held, time.process_time() - cpu
    return model, {
        "train_seconds": wall,
        "train_cpu_seconds": cpu,
        **_ending(fit),
        "seconds_per_epoch": wall / fit.epochs,
        "peak_rss_mb": _peak_rss_mb(),
        "held_seconds": held,
        "train_call_path": fit.train_call_path,
        # An ensemble teacher (epochs and steps above: summed over its members): each member's own.
        **({"members": [_ending(m) for m in fit.members]} if fit.members else {}),
    }


def _quality(data, outputs) -> dict:
    if data.task == "classification":
        return metrics.classification_metrics(data.y_test, softmax(outputs))
    return metrics.regression_metrics(data.unstandardise(data.y_test), data.unstandardise(outputs[:, 0]))


def _measure(
    served: Served, data, budget_s: float, quiet: Quiet, reference: np.ndarray | None = None
) -> tuple[dict, np.ndarray]:
    """Test quality, latency, throughput and size of a served model; and its test outputs. With
    ``reference`` (a converted model: the framework's own outputs), the outputs are checked against it
    before anything is timed (``deploy.check_tolerance``): beyond the model's tolerance this raises,
    so such a model never gets a quality or a timing; ``max_abs_diff`` records the difference.
    Latency and throughput are timed with no other job of the run working (``quiet``). Every call
    returns host (numpy) outputs, so a timed call includes waiting for a GPU."""
    start, held = time.perf_counter(), quiet.held
    outputs = served.fn(np.ascontiguousarray(data.x_test, dtype=np.float32))
    checked = {} if reference is None else {"max_abs_diff": check_tolerance(served, outputs, reference)}
    with quiet.timing():
        latency = timing.latency_samples_us(served.fn, data.x_test, budget_s)
        throughput = timing.throughput_rows_per_s(served.fn, data.x_test, budget_s / 2)
    measured = checked | {
        "metrics": _quality(data, outputs),
        **timing.percentiles(latency),
        "throughput_rows_per_s": throughput,
        "throughput_batch": timing.THROUGHPUT_BATCH,
        "call_path": served.path,
        "n_params": served.n_params,
        "model_bytes": served.model_bytes,
        "macs_per_row": served.macs_per_row,
    }
    measured["measure_seconds"] = time.perf_counter() - start - (quiet.held - held)
    return measured, outputs


def _derive(records: dict[str, dict], data, outputs: dict[str, np.ndarray]) -> None:
    """Retention, distillation gain, speed-up and compression of the students against the teacher;
    the share of the teacher's lead over the scratch student that the distilled one closes, where
    the lead exceeds the test split's own noise (``metrics.difference_noise``)."""
    metric = PRIMARY_METRIC[data.task]
    teacher, kd, scratch = records["teacher"], records["student_kd"], records["student_scratch"]
    for student in (kd, scratch):
        student["retention"] = metrics.retention(student["metrics"][metric], teacher["metrics"][metric], metric)
        student["speedup"] = metrics.ratio(teacher["latency_p50_us"], student["latency_p50_us"])
        student["compression"] = metrics.ratio(teacher["n_params"], student["n_params"])
    kd["kd_gain"] = metrics.kd_gain(kd["metrics"][metric], scratch["metrics"][metric], metric)
    if data.task == "classification":
        y, a, b = data.y_test, softmax(outputs["teacher"]), softmax(outputs["student_scratch"])
    else:
        y, a, b = (
            data.unstandardise(v) for v in (data.y_test, outputs["teacher"][:, 0], outputs["student_scratch"][:, 0])
        )
    noise = metrics.difference_noise(data.task, y, a, b)
    kd.update(
        metrics.gap_closed(kd["metrics"][metric], scratch["metrics"][metric], teacher["metrics"][metric], metric, noise)
    )


def _deployed(
    job: Job, data, pipeline: Pipeline, role: str, model, outputs, teacher: dict, quiet: Quiet, made: dict[str, Made]
) -> dict[str, dict]:
    """Records of the model converted to each deployment format (role ``<role>_<format>``), each
    checked against the framework's own outputs; each converted model that passed goes to ``made``.
    A format that fails is a failed record of its own: the job's other results stand."""
    metric = PRIMARY_METRIC[data.task]
    out = {}
    for fmt, convert in pipeline.deployments(model).items():
        name = f"{role}_{fmt}"
        record = _base(job, data) | {"role": name, "model_role": role, "format": fmt, "status": OK}
        try:
            start = time.perf_counter()
            served = convert()
            record["convert_seconds"] = time.perf_counter() - start
            measured, converted = _measure(served, data, job.timing_budget, quiet, reference=outputs)
            record.update(
                measured,
                tolerance=served.tolerance,
                agreement=None,
                retention=metrics.retention(measured["metrics"][metric], teacher["metrics"][metric], metric),
                speedup=metrics.ratio(teacher["latency_p50_us"], measured["latency_p50_us"]),
            )
            if data.task == "classification":  # share of test rows whose predicted class is unchanged
                record["agreement"] = float(np.mean(converted.argmax(1) == outputs.argmax(1)))
            made[name] = Made.of(converted, served)
        except Exception as exc:  # noqa: BLE001 - a format that fails fails its own record only
            record.update(status=FAILED, error=_reason(exc))
        out[name] = record
    return out


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0]


def _base(job: Job, data) -> dict:
    base = new_record(
        dataset_id=job.dataset_id,
        dataset_source=dataset_source(job.dataset_id),
        seed=job.seed,
        **({} if job.folds is None else {"fold": job.fold, "folds": job.folds}),
        **({} if job.task is None else {"task_id": job.task}),
        framework=job.framework,
        threads=job.threads,
        device=job.device,
        machine=machine(),
        host=socket.gethostname(),
    )
    if data is not None:
        base.update(
            dataset_name=data.name,
            task=data.task,
            dataset_checksum=data.checksum,
            primary_metric=PRIMARY_METRIC[data.task],
        )
    return base


def _settings_key(spec, ignored: tuple[str, ...]) -> str:
    """The spec but its name, its sweep and the ``ignored`` sections: what a model depends on. With
    the transfer set ignored, the labelled rows of an 'unlabeled' one still count."""
    data = spec.to_dict()
    for section in ("name", "sweep", *ignored):
        data.pop(section, None)
    if "transfer" in ignored and spec.transfer.kind == "unlabeled":
        data["labelled_fraction"] = spec.transfer.labelled_fraction
    return json.dumps(data, sort_keys=True)


def _teacher_key(spec) -> str:
    """What the teacher depends on: all but the student, the distillation and the transfer set."""
    return _settings_key(spec, ("student", "distill", "transfer"))


def _scratch_key(spec) -> str:
    """What the scratch student (and its teacher, for its derived numbers) depends on: all but the
    distillation and the transfer set."""
    return _settings_key(spec, ("distill", "transfer"))


def _rows_key(spec) -> tuple:
    """What decides the labelled rows the models train on: the share of the training rows, and the
    labelled share of an 'unlabeled' transfer set."""
    return spec.training.train_fraction, spec.transfer.labelled_fraction if spec.transfer.kind == "unlabeled" else None


def _kd_key(spec) -> str:
    """What the distilled student depends on: everything; a generated transfer set of size 0 is none."""
    if spec.transfer.kind in GENERATORS and spec.transfer.size == 0:
        spec = replace(spec, transfer=TransferSpec())
    return _settings_key(spec, ())


def _transfer_fields(pipeline: Pipeline, extra: TransferSet) -> dict:
    """A distilled student's record with a transfer set: the rows of each kind it trained on, and
    the seconds spent making the transfer rows and labelling them with the teacher; nothing without
    one (records as before), as with a generated one of no rows (size 0)."""
    if extra.kind == "none" or (extra.kind in GENERATORS and not len(extra.x)):
        return {}
    return {
        "transfer_kind": extra.kind,
        "labelled_rows": len(pipeline.data.x_train),
        "transfer_rows": len(extra.x),
        "transfer_generate_seconds": extra.generate_seconds,
        "transfer_label_seconds": extra.label_seconds,
    }


def _variant_fields(variant: Variant | None, train_rows: int | None) -> dict:
    """What a record of a sweep's configuration carries; nothing without a sweep (records as before)
    or without a configuration (None: a job whose config could not be read, or a reference job)."""
    if variant is None or variant.label is None:
        return {}
    return {"variant": variant.label, "variant_params": variant.params, "train_rows": train_rows}


def _run_variant(job: Job, data, full: Data, backend, variant: Variant, shared: dict, quiet: Quiet) -> list[dict]:
    """The records of one configuration. A model this job already trained for an earlier
    configuration with the same settings (``shared``: the teacher per teacher setting, the scratch
    student per everything but the distillation and the transfer set, the distilled student per
    everything) is reused, with the numbers measured then (``reused: true``, ``reused_from``)."""
    pipeline = Pipeline(backend, variant.spec, full, job.seed)
    keys = {
        "teacher": _teacher_key(variant.spec),
        "student_kd": _kd_key(variant.spec),
        "student_scratch": _scratch_key(variant.spec),
    }
    records: dict[str, dict] = {}  # per role: reused or trained below
    models, outputs, deployed = {}, {}, {}
    made: dict[str, dict[str, Made]] = {}  # per role: the model and its deployment formats, as kept
    reused = {role for role, key in keys.items() if key in shared}
    for role in reused:
        models[role], outputs[role] = shared[keys[role]]["model"], shared[keys[role]]["outputs"]
        made[role] = shared[keys[role]]["made"]
        records[role] = copy.deepcopy(shared[keys[role]]["record"]) | {
            "reused": True,
            "reused_from": shared[keys[role]]["label"],
        }
        deployed[role] = copy.deepcopy(shared[keys[role]]["deployed"])
        for record in deployed[role].values():
            record.update(reused=True, reused_from=shared[keys[role]]["label"])
    trained = [role for role in ROLES if role not in reused]
    for role in trained:
        records[role] = _base(job, data) | {"role": role, "status": OK}
    if "teacher" in trained:
        models["teacher"], cost = _train(pipeline.fit_teacher, backend, quiet)
        records["teacher"].update(cost)
    if "student_kd" in trained:
        compress_start = time.perf_counter()
        compressor, t_train, t_val = pipeline.compress(models["teacher"])
        records["student_kd"].update(
            compress_seconds=time.perf_counter() - compress_start, compressor=asdict(compressor)
        )
        extra = pipeline.transfer_set(models["teacher"], compressor)
        records["student_kd"].update(_transfer_fields(pipeline, extra))
        models["student_kd"], cost = _train(lambda: pipeline.fit_student_kd(t_train, t_val, extra), backend, quiet)
        records["student_kd"].update(cost)
    if "student_scratch" in trained:
        models["student_scratch"], cost = _train(pipeline.fit_student_scratch, backend, quiet)
        records["student_scratch"].update(cost)
    served = {role: pipeline.serve(models[role]) for role in trained}
    for role in trained:  # timed only now: no training runs while a timing is taken
        measured, outputs[role] = _measure(served[role], data, job.timing_budget, quiet)
        records[role].update(measured)
    _derive(records, data, outputs)
    # The references were fitted on the base configuration's rows: a configuration that trains on
    # other rows is not held to them.
    same_rows = _rows_key(variant.spec) == _rows_key(spec_from_dict(job.config))
    for role in trained:
        records[role]["flags"] = model_flags(records[role], job.references if same_rows else None)
    for role in trained:
        made[role] = {role: Made.of(outputs[role], served[role])}
        deployed[role] = (
            _deployed(job, data, pipeline, role, models[role], outputs[role], records["teacher"], quiet, made[role])
            if job.deploy
            else {}
        )
        shared[keys[role]] = {
            "model": models[role],
            "outputs": outputs[role],
            "record": copy.deepcopy(records[role]),
            "deployed": copy.deepcopy(deployed[role]),
            "label": variant.label,
            "made": made[role],
        }
    out = [records[role] for role in ROLES] + [r for role in ROLES for r in deployed[role].values()]
    if variant.label is not None:
        records["student_kd"]["teacher_reused"] = "teacher" in reused
        for record in out:
            record.update(_variant_fields(variant, len(pipeline.data.x_train)))
    if keep.wanted(job):
        everything = {name: m for role in ROLES for name, m in made[role].items()}
        keep.keep(
            job, data, variant.label, variant.spec.to_dict(), {r["role"]: r for r in out}, everything, backend.version
        )
    return out


def run_job(job: Job) -> list[dict]:
    """The records of one job: per configuration of the config (one without a sweep), one per role
    (and per deployment format), ``status`` ok or failed (with ``error``). A sweep's configuration
    that fails is recorded as failed and the job's other configurations go on. Other jobs of the
    run may work at the same time on this machine; none does while this one times a model."""
    started = time.time()
    try:
        with Quiet(quiet_folder(job), job.name) as quiet:
            return _run_job(job, quiet, started)
    except OSError as exc:  # the lock folder cannot be made or written (the job itself never raises)
        return failed_records(job, _reason(exc), started)


def _run_job(job: Job, quiet: Quiet, started: float) -> list[dict]:
    from distillbench.datasets.prepare import get_prepared
    from distillbench.datasets.sources import OpenMLCache
    from distillbench.implementations.frameworks import get_backend

    data = None
    try:
        data = get_prepared(
            job.dataset_id,
            job.seed,
            target=job.target,
            cache=OpenMLCache.resolve(job.cache, job.source),
            fold=job.fold,
            folds=job.folds,
            task=job.task,
        )
        keep.clear(job)
        if job.framework == REFERENCE:
            return _run_references(job, data, quiet, started)
        backend = get_backend(job.framework)
        backend.configure(job.seed, job.threads, job.device)
        # Between epochs: held while another job is timed (the hook Backend.checkpoint is there for).
        backend.checkpoint = quiet.checkpoint  # type: ignore[method-assign]
        variants = spec_from_dict(job.config).variants()
        full = Data(data.task, data.n_classes, data.x_train, data.y_train, data.x_val, data.y_val, data.onehot_groups)
        out = []
        # One teacher setting at a time, in the order of their first configuration: its teacher is
        # trained once, and each setting starts from the seed's fresh random state, as it would alone.
        for n, key in enumerate(dict.fromkeys(_teacher_key(v.spec) for v in variants)):
            if n:
                backend.configure(job.seed, job.threads, job.device)
            shared: dict = {}
            for variant in (v for v in variants if _teacher_key(v.spec) == key):
                try:
                    out += _run_variant(job, data, full, backend, variant, shared, quiet)
                except Exception as exc:
                    if variant.label is None:
                        raise
                    out += _failed(job, variant, _reason(exc), started, data, traceback.format_exc(limit=-3))
        for record in out:
            record.update(
                framework_version=backend.version,
                determinism=backend.determinism,
                started=started,
                finished=time.time(),
            )
        return out
    except Exception as exc:  # noqa: BLE001 - a failed job is recorded, never raised
        return failed_records(job, _reason(exc), started, data, traceback.format_exc(limit=-3))


def quiet_folder(job: Job) -> Path | None:
    """This machine's folder of timing locks (``quiet.py``): the run's, one per host, or where this
    machine cannot write the run folder (a Dask worker elsewhere), a temporary folder named after it."""
    if job.quiet is None:
        return None
    folder = Path(job.quiet)
    if not os.access(folder.parent, os.W_OK):
        folder = (
            Path(tempfile.gettempdir()) / f"distillbench-quiet-{hashlib.sha256(job.quiet.encode()).hexdigest()[:12]}"
        )
    return folder / socket.gethostname()


def _run_references(job: Job, data, quiet: Quiet, started: float) -> list[dict]:
    """The records of the reference job: each reference role fitted on the rows the teacher sees
    (the base configuration's, ``pipeline.labelled_data``), then measured like any model."""
    import sklearn

    from distillbench.implementations.references import FITS

    spec = spec_from_dict(job.config)
    train = labelled_data(
        Data(data.task, data.n_classes, data.x_train, data.y_train, data.x_val, data.y_val), spec, job.seed
    )[0]
    records, models, made = {}, {}, {}
    for role, fit in FITS.items():
        models[role], cost = _train(partial(fit, train, spec.training, job.seed, job.threads), None, quiet)
        records[role] = _base(job, data) | {"role": role, "status": OK, "framework_version": sklearn.__version__} | cost
    for role in REFERENCES:  # timed only now, with no fitting running
        served = models[role].serve()
        measured, outputs = _measure(served, data, job.timing_budget, quiet)
        records[role].update(measured)
        records[role]["flags"] = model_flags(records[role], None)
        made[role] = Made.of(outputs, served)
        records[role].update(started=started, finished=time.time())
    if keep.wanted(job):
        keep.keep(job, data, None, job.config, records, made, sklearn.__version__)
    return list(records.values())


def _failed(
    job: Job, variant: Variant | None, reason: str, started: float, data=None, detail: str | None = None
) -> list[dict]:
    return [
        _base(job, data)
        | {
            "role": role,
            "status": FAILED,
            "error": reason,
            "traceback": detail,
            "started": started,
            "finished": time.time(),
        }
        | _variant_fields(variant, None)
        for role in (REFERENCES if job.framework == REFERENCE else ROLES)
    ]


def failed_records(job: Job, reason: str, started: float, data=None, detail: str | None = None) -> list[dict]:
    """A failed job: one record per role (per configuration of a sweep; the reference job: one),
    ``status: failed`` and the reason."""
    variants: Sequence[Variant | None]
    try:
        variants = spec_from_dict(job.config).variants()
    except Exception:  # noqa: BLE001 - the config itself is what failed
        variants = [None]
    if job.framework == REFERENCE:
        variants = [None]
    return [record for variant in variants for record in _failed(job, variant, reason, started, data, detail)]
