"""OpenML tasks (`run --tasks`, `openml/t/N` in a suite): a task's dataset, target and its own
cross-validation folds, read through openml-python from a cache.

openml.org is out of reach here, so the task is MADE HERE: `make_task` writes the files openml-python
reads for a task (`task.xml`, `datasplits.arff`) for iris from the shared cache, with its own
stratified 3-fold splits repeated twice (seeded differently from anything distillbench does), under
the distillbench-private ID 990000161 (IDs from 990000000 up are never OpenML IDs)."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold

from distillbench.benchmarks.store.record import job_key
from distillbench.benchmarks.store.run_folder import read_run
from distillbench.datasets.load import load_dataset
from distillbench.datasets.sources import DATASETS_SUBDIR, OpenMLCache
from distillbench.datasets.suites import load_suite
from distillbench.datasets.tasks import STUDIES_SUBDIR, TASKS_SUBDIR, load_task, openml_suite, task_split
from distillbench.errors import UserError

TASK = 990000161
TINY = 'name = "tiny"\n[teacher]\nwidths = [8]\n[student]\nwidths = [4]\n[training]\nepochs = 2\npatience = 1\n'


def make_task(root: Path, task_id: int, dataset_id: int, target: str, y: np.ndarray, repeats: int, folds: int) -> dict:
    """Write a classification task's task.xml and datasplits.arff under the OpenML cache ``root``, made
    here (not from openml.org); returns its splits: (repeat, fold) -> (train rows, test rows)."""
    entry = root / TASKS_SUBDIR / str(task_id)
    entry.mkdir(parents=True)
    (entry / "task.xml").write_text(
        f"""<oml:task xmlns:oml="http://openml.org/openml">
  <oml:task_id>{task_id}</oml:task_id>
  <oml:task_name>Task {task_id}: MADE HERE by distillbench's tests, not from openml.org</oml:task_name>
  <oml:task_type_id>1</oml:task_type_id>
  <oml:task_type>Supervised Classification</oml:task_type>
  <oml:input name="source_data">
    <oml:data_set>
      <oml:data_set_id>{dataset_id}</oml:data_set_id>
      <oml:target_feature>{target}</oml:target_feature>
    </oml:data_set>
  </oml:input>
  <oml:input name="estimation_procedure">
    <oml:estimation_procedure>
      <oml:id>1</oml:id>
      <oml:type>crossvalidation</oml:type>
      <oml:data_splits_url>https://made-here.invalid/{task_id}/datasplits.arff</oml:data_splits_url>
      <oml:parameter name="number_repeats">{repeats}</oml:parameter>
      <oml:parameter name="number_folds">{folds}</oml:parameter>
      <oml:parameter name="percentage"></oml:parameter>
      <oml:parameter name="stratified_sampling">true</oml:parameter>
    </oml:estimation_procedure>
  </oml:input>
</oml:task>
"""
    )
    lines = [
        "% MADE HERE by distillbench's tests from the shared cache's dataset, not from openml.org",
        f"@RELATION task_{task_id}_splits",
        "@ATTRIBUTE type {TRAIN,TEST}",
        "@ATTRIBUTE rowid NUMERIC",
        "@ATTRIBUTE repeat NUMERIC",
        "@ATTRIBUTE fold NUMERIC",
        "@DATA",
    ]
    splits = {}
    for r in range(repeats):
        for k, (train, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=1000 + r).split(y, y)):
            splits[(r, k)] = (train, test)
            lines += [f"TRAIN,{i},{r},{k}" for i in train] + [f"TEST,{i},{r},{k}" for i in test]
    (entry / "datasplits.arff").write_text("\n".join(lines) + "\n")
    return splits


@pytest.fixture(scope="module")
def task_cache(openml_source, tmp_path_factory) -> dict:
    """A read-only-style source holding iris (copied from the shared cache) and the made-here task,
    and a writable cache for it."""
    source = tmp_path_factory.mktemp("task-source")
    shutil.copytree(openml_source / DATASETS_SUBDIR / "61", source / DATASETS_SUBDIR / "61")
    cache = OpenMLCache(tmp_path_factory.mktemp("task-cache"), source)
    raw = load_dataset(61, cache=cache)
    splits = make_task(source, TASK, 61, raw.target, raw.y.cat.codes.to_numpy(), repeats=2, folds=3)
    return {"source": source, "cache": cache, "splits": splits, "labels": raw.y.cat.codes.to_numpy()}


def test_a_task_is_read_from_the_cache_with_its_own_splits(task_cache) -> None:
    cache = task_cache["cache"]
    entry = cache.root / TASKS_SUBDIR / str(TASK)
    task = load_task(TASK, cache)
    assert (task.dataset_id, task.target, task.repeats, task.folds) == (61, "class", 2, 3)
    # openml pickles the splits each time it parses them: never left for the next reader to unpickle
    assert not [p for p in entry.iterdir() if "pkl" in p.name]
    for (repeat, fold), (train, test) in task_cache["splits"].items():
        got = task_split(TASK, repeat, fold, cache)
        assert np.array_equal(got[0], train) and np.array_equal(got[1], test)
    assert not [p for p in entry.iterdir() if "pkl" in p.name]


def test_a_pickle_in_a_task_entry_is_never_unpickled(task_cache, tmp_path) -> None:
    cache = task_cache["cache"]
    marker = tmp_path / "unpickled"

    class Crafted:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (cache.root / TASKS_SUBDIR / str(TASK) / "datasplits.pkl.py3").write_bytes(pickle.dumps(Crafted()))
    task_split(TASK, 0, 0, cache)
    assert not marker.exists()


def test_a_task_that_is_not_in_the_cache_fails_in_one_line(task_cache, offline) -> None:
    with pytest.raises(UserError, match="OpenML task 990000999 is not in the cache"):
        load_task(990000999, task_cache["cache"])


def test_a_suite_names_a_task_as_openml_t_n(tmp_path) -> None:
    suite = tmp_path / "tasks.toml"
    suite.write_text(f'datasets = ["openml/t/{TASK}", 31]\n')
    entries = load_suite(str(suite)).entries
    assert [(e.task_id, e.dataset_id) for e in entries] == [(TASK, 0), (None, 31)]
    suite.write_text('datasets = ["openml/s/99"]\n')
    with pytest.raises(UserError, match="openml/t/N"):
        load_suite(str(suite))


def test_an_openml_suite_is_its_tasks_read_from_the_cache(task_cache, offline) -> None:
    """openml-python keeps no copy of a suite: its task list is the API's study XML in the cache
    (MADE HERE for a suite of the private ID 990000099 holding the made-here task)."""
    study = task_cache["source"] / STUDIES_SUBDIR / "990000099" / "study.xml"
    study.parent.mkdir(parents=True)
    study.write_text(
        '<oml:study xmlns:oml="http://openml.org/openml"><oml:id>990000099</oml:id>'
        "<oml:main_entity_type>task</oml:main_entity_type><oml:name>made here</oml:name>"
        f"<oml:tasks><oml:task_id>{TASK}</oml:task_id></oml:tasks></oml:study>"
    )
    suite = openml_suite("openml/s/990000099", task_cache["cache"])
    assert (suite.name, [(e.task_id, e.dataset_id) for e in suite.entries]) == ("openml-s-990000099", [(TASK, 0)])
    with pytest.raises(UserError, match=r"OpenML suite 990000098: no .*study\.xml"):
        openml_suite("openml/s/990000098", task_cache["cache"])


def _command(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("distillbench")), *args]


@pytest.mark.slow
def test_a_task_based_run_uses_exactly_the_tasks_folds(task_cache, tmp_path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    options = [
        "--openml-source",
        str(task_cache["source"]),
        "--cache",
        str(task_cache["cache"].root),
        "--config",
        str(tmp_path / "tiny.toml"),
        "--timing-budget",
        "0.02",
        "--frameworks",
        "torch",
        "--no-deploy",
        "--workers",
        "1",
        "--save-predictions",
        "--tasks",
        str(TASK),
    ]
    refused = subprocess.run(_command("run", *options, "--folds", "3"), capture_output=True, text=True)
    assert refused.returncode == 2 and "OpenML tasks bring their own folds" in refused.stderr
    done = subprocess.run(
        _command("run", *options, "--out", str(tmp_path / "run")), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    run = read_run(tmp_path / "run")
    expected = {(61, r, k, f) for r in range(2) for k in range(3) for f in ("reference", "torch")}
    assert {job_key(r) for r in run.records} == expected == run.jobs.ok
    assert all((r["task_id"], r["folds"]) == (TASK, 3) for r in run.records)
    assert not list((task_cache["cache"].root / TASKS_SUBDIR).rglob("*pkl*"))  # the workers' reads too
    [dataset] = run.manifest["datasets"]
    assert dataset["openml_task"]["id"] == TASK and (
        dataset["openml_task"]["repeats"],
        dataset["openml_task"]["folds"],
    ) == (2, 3)
    assert run.manifest["seeds"] == [0, 1] and run.manifest["folds"] is None
    # each job was tested on exactly its task fold's rows, in the task's order
    labels = task_cache["labels"]
    for (repeat, fold), (_, test) in task_cache["splits"].items():
        kept = pd.read_parquet(tmp_path / "run" / "predictions" / f"61-{repeat}-fold{fold}-torch.parquet")
        assert list(kept["y_true"]) == list(labels[test])
    # the report names the task and corrects its intervals over the task's folds
    report = subprocess.run(
        _command("report", str(tmp_path / "run"), "--out", str(tmp_path / "report")), capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"| OpenML tasks | {TASK} (dataset 61: 2 x 3 folds) |" in text and "(Nadeau and Bengio 2003)" in text


def test_resume_names_the_task_a_dataset_had_and_has() -> None:
    from distillbench.benchmarks.running.runner import RunOptions, _check_same_plan
    from distillbench.implementations.spec import spec_from_dict

    spec = spec_from_dict({})
    options = RunOptions(entries=[], suite=None, frameworks=["torch"], seeds=[0], spec=spec, out=Path("run"))
    previous = {
        "datasets": [{"id": 61, "openml_task": {"id": 1}}],
        "seeds": [0],
        "frameworks": ["torch"],
        "deploy": True,
        "config": spec.to_dict(),
    }
    with pytest.raises(UserError, match=r"the plan differs from the run's: dataset 61 task 2, not 1 \("):
        _check_same_plan(previous, options, {61: {"id": 61, "openml_task": {"id": 2}}})
