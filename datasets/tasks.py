"""OpenML tasks: a dataset, its target and its official cross-validation splits, read through
openml-python (`openml.tasks.get_task`, `task.get_train_test_split_indices`) from the writable
cache, filled from the read-only source as datasets are (``sources.py``).

The same trust rule as for datasets: only a task entry's plain files (``task.xml``,
``datasplits.arff``) are copied from a source, every pickle in the entry is deleted before openml
opens it (openml unpickles ``datasplits.pkl.py3`` whenever it exists) and again after it wrote one,
and ``task.xml`` must parse and be the task's own.
"""

from __future__ import annotations

import contextlib
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillbench.datasets.sources import OFFLINE_HINT, OML, PICKLES, OpenMLCache, file_sha256, one_line
from distillbench.errors import UserError
from distillbench.files import replaced_atomically

TASKS_SUBDIR = Path("org", "openml", "www", "tasks")
# A suite's task list, as openml.org's API gives it (``study/N``): openml-python does not cache it.
STUDIES_SUBDIR = Path("org", "openml", "www", "studies")
SUITE_PREFIX = "openml/s/"
TASK_FILES = ("task.xml", "datasplits.arff")
KINDS = {"1": "classification", "2": "regression"}  # OpenML task types distillbench runs


@dataclass(frozen=True)
class Task:
    """An OpenML task as a run uses it: its dataset and target, and its repeats x folds splits."""

    task_id: int
    dataset_id: int
    target: str
    repeats: int
    folds: int
    splits_sha256: str  # of datasplits.arff: what keys the prepared arrays of its splits


def task_entry(cache: OpenMLCache, task_id: int) -> Path:
    return cache.root / TASKS_SUBDIR / str(task_id)


def _stage(cache: OpenMLCache, task_id: int) -> tuple[Path, int | None]:
    """Copy the source's plain files the cache's task entry lacks and delete every pickle in it; the
    entry and the task's dataset (None: the task is not in the cache and openml must fetch it, which
    fails within seconds, saying so, where openml.org cannot be reached)."""
    entry = task_entry(cache, task_id)
    source = None if cache.source is None else cache.source / TASKS_SUBDIR / str(task_id)
    entry.mkdir(parents=True, exist_ok=True)
    if source is not None and source.is_dir():
        for name in TASK_FILES:
            if (source / name).is_file() and not (entry / name).exists():
                with replaced_atomically(entry / name) as partial:
                    shutil.copyfile(source / name, partial)
    _delete_pickles(entry)
    if not all((entry / name).is_file() for name in TASK_FILES):
        problem = cache.unreachable()
        if problem:
            where = f"the cache {cache.root}" + (f" or the source {cache.source}" if cache.source else "")
            raise UserError(f"OpenML task {task_id} is not in {where}, and {problem}; {OFFLINE_HINT}")
        return entry, None
    return entry, _dataset_of(entry, task_id)


def _dataset_of(entry: Path, task_id: int) -> int:
    """The dataset of a task entry's task.xml, which must parse, be the task's, and be a
    classification or regression task."""
    try:
        root = ET.fromstring((entry / "task.xml").read_bytes().decode("utf-8"))
    except (ET.ParseError, UnicodeDecodeError) as exc:
        raise UserError(f"OpenML task {task_id}: task.xml is not valid XML ({one_line(exc)})") from None
    if root.tag != OML + "task" or (root.findtext(OML + "task_id") or "").strip() != str(task_id):
        raise UserError(f"OpenML task {task_id}: {entry / 'task.xml'} is not the description of task {task_id}")
    kind = (root.findtext(OML + "task_type_id") or "").strip()
    if kind not in KINDS:
        raise UserError(f"OpenML task {task_id}: task type {kind or '?'} is neither classification nor regression")
    dataset_id = (root.findtext(f".//{OML}data_set_id") or "").strip()
    if not dataset_id.isdigit():
        raise UserError(f"OpenML task {task_id}: task.xml names no dataset")
    return int(dataset_id)


def _delete_pickles(entry: Path) -> None:
    for path in entry.iterdir():
        if path.name.endswith(PICKLES):
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _opened(cache: OpenMLCache, task_id: int) -> Iterator:
    """``openml.tasks.get_task`` on the staged entry, its dataset staged first. openml pickles the
    splits each time it parses them (reading the task, its split dimensions or indices): whatever it
    wrote is deleted when the block ends, so the next reader never unpickles it."""
    if task_id < 1:
        raise UserError(f"{task_id} is not an OpenML task ID (IDs are positive integers)")
    entry, dataset_id = _stage(cache, task_id)
    try:
        yield _get_task(cache, task_id, entry, dataset_id)
    finally:
        if entry.is_dir():
            _delete_pickles(entry)


# What openml.tasks.get_task would also fetch of the task's dataset: nothing (sources.py reads it).
_DATASET_FILES = ("download_data", "download_qualities", "download_features_meta_data")


def _get_task(cache: OpenMLCache, task_id: int, entry: Path, dataset_id: int | None):
    if dataset_id is not None:
        cache.data_file(dataset_id)  # copied from the source and verified before openml opens it
    openml = cache._openml()
    try:
        task = openml.tasks.get_task(task_id, download_splits=True, **dict.fromkeys(_DATASET_FILES, False))
    except (openml.exceptions.PyOpenMLError, OSError, ValueError, KeyError) as exc:
        raise UserError(f"OpenML task {task_id} could not be read ({one_line(exc)})") from None
    _dataset_of(entry, task_id)  # what openml fetched, checked as what it found
    if task.task_type_id.value not in (1, 2):
        raise UserError(f"OpenML task {task_id}: neither a classification nor a regression task")
    return task


def openml_suite(text: str, cache: OpenMLCache):
    """``openml/s/N``: OpenML benchmark suite N as a Suite of task entries. Its task list is read from
    ``studies/N/study.xml`` in the cache or the source (the API's study XML: openml-python keeps no
    copy of a suite) or, where there is none, through ``openml.study.get_suite`` from openml.org."""
    from distillbench.datasets.suites import Suite, SuiteEntry

    number = text[len(SUITE_PREFIX) :]
    if not (number.isdigit() and int(number) > 0):
        raise UserError(f"suite {text!r}: an OpenML suite is written openml/s/N, N a positive suite ID")
    suite_id = int(number)
    folders = [cache.root] + ([cache.source] if cache.source else [])
    stored = next(
        (
            f / STUDIES_SUBDIR / number / "study.xml"
            for f in folders
            if (f / STUDIES_SUBDIR / number / "study.xml").is_file()
        ),
        None,
    )
    if stored is not None:
        try:
            root = ET.fromstring(stored.read_bytes().decode("utf-8"))
        except (ET.ParseError, UnicodeDecodeError) as exc:
            raise UserError(f"OpenML suite {suite_id}: {stored} is not valid XML ({one_line(exc)})") from None
        if root.tag != OML + "study" or (root.findtext(OML + "id") or "").strip() != number:
            raise UserError(f"OpenML suite {suite_id}: {stored} is not the description of suite {suite_id}")
        name, tasks = root.findtext(OML + "name") or "", [int(t.text or 0) for t in root.iter(OML + "task_id")]
    else:
        problem = cache.unreachable()
        if problem:
            where = " or ".join(str(f) for f in folders)
            raise UserError(
                f"OpenML suite {suite_id}: no {STUDIES_SUBDIR}/{number}/study.xml in {where}, and {problem}"
            )
        openml = cache._openml()
        try:
            study = openml.study.get_suite(suite_id)
        except (openml.exceptions.PyOpenMLError, OSError, ValueError) as exc:
            raise UserError(f"OpenML suite {suite_id} could not be read ({one_line(exc)})") from None
        name, tasks = study.name or "", list(study.tasks or [])
    if not tasks or min(tasks) < 1:
        raise UserError(f"OpenML suite {suite_id} names no task")
    return Suite(f"openml-s-{suite_id}", name, [SuiteEntry(0, task_id=t) for t in tasks])


def resolve(entries: list, cache: OpenMLCache) -> list:
    """Suite entries with each task entry (``SuiteEntry.task_id``) given its task's dataset and target."""
    from dataclasses import replace

    out = []
    for entry in entries:
        if entry.task_id is None:
            out.append(entry)
            continue
        task = load_task(entry.task_id, cache)
        note = entry.note or f"OpenML task {task.task_id}: {task.repeats} x {task.folds}-fold"
        out.append(replace(entry, dataset_id=task.dataset_id, target=task.target, note=note))
    return out


# Tasks read in this process, by (task, cache, source): a run asks for the same task when it plans
# (suite, seeds, manifest), for each job and for each split's cache key, and each read parses the
# splits file; a staged entry's files do not change.
_LOADED: dict[tuple, Task] = {}


def load_task(task_id: int, cache: OpenMLCache | None = None) -> Task:
    """The task's dataset, target and splits' shape, from the cache (never from openml.org)."""
    cache = cache or OpenMLCache.resolve()
    key = (task_id, cache.root, cache.source)
    if key not in _LOADED:
        _LOADED[key] = _read_task(task_id, cache)
    return _LOADED[key]


def _read_task(task_id: int, cache: OpenMLCache) -> Task:
    with _opened(cache, task_id) as task:
        repeats, folds, samples = task.get_split_dimensions()
    if samples != 1 or folds < 2:
        raise UserError(
            f"OpenML task {task_id}: {repeats} x {folds} folds x {samples} samples: only cross-validation "
            "tasks (2 folds or more, one sample) are supported"
        )
    return Task(
        task_id=task_id,
        dataset_id=int(task.dataset_id),
        target=task.target_name,
        repeats=repeats,
        folds=folds,
        splits_sha256=file_sha256(task_entry(cache, task_id) / "datasplits.arff"),
    )


def task_split(task_id: int, repeat: int, fold: int, cache: OpenMLCache | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The row indices (into the dataset's rows) of the task's training and test part of (repeat, fold)."""
    cache = cache or OpenMLCache.resolve()
    with _opened(cache, task_id) as task:
        try:
            train, test = task.get_train_test_split_indices(fold=fold, repeat=repeat)
        except (ValueError, KeyError) as exc:
            raise UserError(f"OpenML task {task_id} has no repeat {repeat}, fold {fold} ({one_line(exc)})") from None
    return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
