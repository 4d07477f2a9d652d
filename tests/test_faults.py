"""Fault injection: the harness attacked the way a hostile or unlucky user would (issue 17).

Each test breaks something for real (a crafted pickle in the OpenML cache, a truncated file, a
corrupt entry) and asserts what the README's "What survives what" promises: nothing executed,
nothing valid deleted, a one-line message naming the real cause, no traceback, and the rest of the
run going on. Select them with `pytest -m faults`.

Caches are writable copies made from ../shared/openml-cache (never written to); the real openml
package reads them.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, command, iris_run_command
from distillbench.benchmarks.reporting.sections import failed_table, run_table
from distillbench.benchmarks.store.run_folder import RunFolder, read_run
from distillbench.cli import main
from distillbench.datasets.load import load_dataset
from distillbench.datasets.prepare import ARRAYS, get_prepared
from distillbench.datasets.sources import DATASETS_SUBDIR, QUARANTINE, OpenMLCache
from distillbench.errors import UserError
from distillbench.implementations.roles import REFERENCES, ROLES

pytestmark = [pytest.mark.faults, pytest.mark.slow]


class Payload:
    """A pickle that, when loaded, creates `marker`: proof that code from the cache ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def copy_source(openml_source: Path, folder: Path, *dataset_ids: int) -> Path:
    """A writable OpenML cache holding copies of the shared cache's entries, to be broken and used as a source."""
    for dataset_id in dataset_ids:
        target = folder / DATASETS_SUBDIR / str(dataset_id)
        shutil.copytree(openml_source / DATASETS_SUBDIR / str(dataset_id), target)
        for path in target.iterdir():
            path.chmod(0o644)
    return folder


def truncate_lines(path: Path, drop: int) -> None:
    """Cut the last `drop` lines: still a well-formed ARFF file, with fewer rows."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-drop]))


def quarantined(cache: OpenMLCache) -> list[Path]:
    return sorted((cache.root / QUARANTINE).glob("*/*"))


@pytest.fixture
def cache(openml_source: Path, tmp_path: Path) -> OpenMLCache:
    return OpenMLCache(tmp_path / "cache", openml_source)


# ---- 1. nothing in the OpenML cache is ever unpickled


def test_a_crafted_pickle_in_the_cache_never_runs(cache, tmp_path, offline) -> None:
    marker = tmp_path / "code-ran"
    cache.fetch(61, metadata=True)
    payload = pickle.dumps(Payload(marker))
    for name in ("dataset.pkl.py3", "features.xml.pkl", "qualities.xml.pkl", "dataset.feather.attributes.pkl.py3"):
        (cache.entry(61) / name).write_bytes(payload)

    dataset = cache.fetch(61, metadata=True)  # features and qualities: openml reads their pickles first
    raw = load_dataset(61, cache=cache)  # the data: openml reads dataset.pkl.py3 whenever it exists
    assert not marker.exists()
    assert (raw.name, len(raw.X)) == ("iris", 150) and len(dataset.features) == 5


def test_a_crafted_pickle_through_the_cli(cache, tmp_path) -> None:
    marker = tmp_path / "code-ran"
    cache.fetch(61)
    (cache.entry(61) / "dataset.pkl.py3").write_bytes(pickle.dumps(Payload(marker)))
    result = distillbench(
        command("datasets", "info", "61", "--json", "--cache", str(cache.root), "--openml-source", str(cache.source))
    )
    assert result.returncode == 0, result.stderr
    assert not marker.exists()


# ---- 6. a corrupt cache entry: rebuilt, or that dataset fails with one clear line


@pytest.mark.parametrize("content", [b"garbage", b"\x80\x05\x95", b""], ids=["garbage", "truncated", "empty"])
def test_a_corrupt_openml_pickle_is_ignored(cache, content, offline) -> None:
    load_dataset(61, cache=cache)
    (cache.entry(61) / "dataset.pkl.py3").write_bytes(content)
    assert len(load_dataset(61, cache=cache).X) == 150


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not-an-npz", "pickled-object"])
def test_corrupt_prepared_arrays_are_prepared_again(cache, damage, caplog, offline) -> None:
    first = get_prepared(61, 3, cache=cache)
    (path,) = (cache.root / "distillbench-prepared").glob("61-seed3-*.npz")
    if damage == "garbage":
        path.write_bytes(b"PK\x03\x04 garbage")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "not-an-npz":
        path.write_bytes(b"\x93NUMPY garbage")
    else:  # a well-formed npz whose arrays need unpickling: refused by allow_pickle=False
        np.savez(path, meta=np.array([Payload(path.with_name("code-ran"))], dtype=object))
    with caplog.at_level(logging.WARNING):
        again = get_prepared(61, 3, cache=cache)
    assert f"the prepared arrays {path} do not load" in caplog.text
    assert all(np.array_equal(getattr(again, name), getattr(first, name)) for name in ARRAYS)
    assert not path.with_name("code-ran").exists()
    with np.load(path, allow_pickle=False) as stored:  # written again, sound
        assert np.array_equal(stored["x_train"], first.x_train)


@pytest.mark.parametrize(
    ("file", "content", "problem"),
    [
        ("description.xml", b"not xml", "description.xml is not valid XML"),
        (
            "description.xml",
            b"<oml:data_set_description xmlns:oml='http://openml.org/openml'><oml:id>62</oml:id>"
            b"</oml:data_set_description>",
            "description.xml is not the description of OpenML dataset 61",
        ),
        ("description.xml", "<a>caf\N{LATIN SMALL LETTER E WITH ACUTE}</a>".encode("latin-1"), "not valid XML"),
        ("features.xml", b"<oml:data_features", "features.xml is not valid XML"),
        ("dataset.arff", None, "dataset.arff has md5"),
    ],
    ids=["description-garbage", "description-of-another", "description-latin1", "features", "arff-truncated"],
)
def test_a_corrupt_copy_is_quarantined_and_copied_again_from_the_source(
    cache, file, content, problem, caplog, offline
) -> None:
    cache.fetch(61, metadata=True)
    if content is None:
        truncate_lines(cache.entry(61) / file, 10)
    else:
        (cache.entry(61) / file).write_bytes(content)
    broken = (cache.entry(61) / file).read_bytes()

    with caplog.at_level(logging.WARNING):
        raw = load_dataset(61, cache=cache)
    assert len(raw.X) == 150 and raw.checksum == load_dataset(61, cache=cache).checksum
    (moved,) = quarantined(cache)
    assert (moved / file).read_bytes() == broken  # moved aside, never deleted
    assert (moved / "dataset.arff").is_file()
    assert problem in caplog.text and f"moved it to {moved}" in caplog.text


def test_a_truncated_data_file_fails_its_dataset_with_one_line(openml_source, tmp_path, offline) -> None:
    source = copy_source(openml_source, tmp_path / "source", 61, 531)
    truncate_lines(source / DATASETS_SUBDIR / "531" / "dataset.arff", 10)  # still parses: 10 rows fewer
    cache = OpenMLCache(tmp_path / "cache", source)

    with pytest.raises(UserError) as error:
        get_prepared(531, 0, cache=cache)
    message = str(error.value)
    (moved,) = quarantined(cache)
    assert "\n" not in message
    assert message.startswith(
        f"OpenML dataset 531 is corrupt in the source {source / DATASETS_SUBDIR / '531'}: dataset.arff has md5 "
    )
    assert f"moved to {moved}" in message
    assert not cache.entry(531).exists() and not (cache.root / "distillbench-prepared").exists()
    assert len(get_prepared(61, 0, cache=cache).y_test) == 30  # the other dataset is unaffected


def test_a_corrupt_entry_without_a_source(cache, offline) -> None:
    cache.fetch(61)
    alone = OpenMLCache(cache.root)
    (alone.entry(61) / "description.xml").write_text("<oml:data_set_description")
    with pytest.raises(
        UserError,
        match=r"^OpenML dataset 61: its cache entry is corrupt \(description.xml is not "
        r"valid XML .*\); moved it to .*; fetch it again",
    ):
        load_dataset(61, cache=alone)
    (moved,) = quarantined(alone)
    assert (moved / "dataset.arff").is_file()  # the valid data file is kept


def test_a_run_goes_on_past_a_corrupt_dataset(openml_source, tmp_path) -> None:
    source = copy_source(openml_source, tmp_path / "source", 61, 531)
    truncate_lines(source / DATASETS_SUBDIR / "531" / "dataset.arff", 10)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "run"
    result = distillbench(iris_run_command(config, tmp_path / "cache", out, "--datasets", "61,531", source=source))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "dataset 531 fails its jobs: OpenML dataset 531 is corrupt in the source" in result.stderr
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {(r["dataset_id"], r["status"]) for r in records} == {(61, "ok"), (531, "failed")}


# ---- the harness: runs killed, interrupted, starved of disk, and their folders corrupted
#
# Runs are real (torch, the tiny config, --no-deploy, iris from the shared cache). Exit statuses
# (errors.py): 0 ok, 1 a check failed (compare's regression), 2 bad input, 3 a bug, 4 a run stopped
# by a fault of its disk or folder, 130 SIGINT, 143 SIGTERM. Commands whose fault is in what they read run in
# this process (`main`, no interpreter to start); runs and anything killed run as subprocesses.


@pytest.fixture(scope="module")
def bench(openml_source, openml_cache, tmp_path_factory):
    """`bench.run(out, *args)`: the arguments of a tiny run of iris (two seeds) into `out` (later options
    override); one job at a time, so that what runs when a fault strikes is known."""
    config = tmp_path_factory.mktemp("config") / "tiny.toml"
    config.write_text(TINY)

    class Bench:
        @staticmethod
        def run(out: Path, *args: str) -> list[str]:
            return iris_run_command(config, openml_cache.root, out, "--seeds", "2", *args, source=openml_source)

    return Bench()


def distillbench(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def one_clean_line(returncode: int, stderr: str, exit_code: int, pattern: str) -> None:
    """Exit `exit_code`, no traceback, and stderr's last line is `distillbench: ...` matching `pattern`."""
    assert returncode == exit_code, f"exit {returncode}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert re.match(pattern, last), last


def in_process(capsys, *args: str) -> tuple[int, str]:
    """`distillbench ARGS` run by `main` in this process: its exit status and stderr."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # the parser's usage errors
        code = exc.code
    return code, capsys.readouterr().err


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def started(args: list[str], folder: Path) -> subprocess.Popen:
    """A command in its own process group (so a 'Ctrl-C' reaches it and its workers, as in a terminal)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "stdout", "w") as stdout, open(folder / "stderr", "w") as stderr:
        return subprocess.Popen(args, stdout=stdout, stderr=stderr, start_new_session=True)


def wait_until(condition, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"ended early with {proc.returncode}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def record_count(out: Path) -> int:
    path = out / "records.jsonl"
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def workers_of(proc: subprocess.Popen) -> list[int]:
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def wait_gone(pids: list[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(
        Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text() for pid in pids
    ):
        assert time.monotonic() < deadline, f"processes {pids} still running"
        time.sleep(0.1)


def assert_complete(out: Path, seeds: int) -> None:
    """Every planned job (per seed, the reference job and the torch job) has all its records, ok, and
    the manifest says so; no job's records twice in one invocation, and each job counted ok in
    exactly one invocation."""
    records, m = lines(out), manifest(out)
    latest = {(r["dataset_id"], r["seed"], r["framework"], r["role"]): r for r in records}
    assert len(latest) == seeds * (len(ROLES) + len(REFERENCES)) and all(r["status"] == "ok" for r in latest.values())
    per_invocation = [(r["invocation"], r["dataset_id"], r["seed"], r["framework"], r["role"]) for r in records]
    assert len(per_invocation) == len(set(per_invocation))
    assert m["status"] == "complete" and m["invocations"][-1]["status"] == "complete"
    jobs = 2 * seeds
    assert (m["jobs"]["planned"], m["jobs"]["ok"], m["jobs"]["failed"], m["jobs"]["missing"]) == (jobs, jobs, 0, 0)
    assert sum(i["jobs"]["ok"] for i in m["invocations"]) == jobs


def torch_records(out: Path) -> int:
    """How many records the torch jobs have written (each seed's reference job runs before them)."""
    path = out / "records.jsonl"
    return path.read_text().count('"framework": "torch"') if path.is_file() else 0


# -- kill -9, SIGTERM, Ctrl-C twice


@pytest.mark.parametrize(("when", "seeds"), [("preparing", "1"), ("first-job", "1"), ("after-a-job", "2")])
def test_kill_9_of_the_driver_then_resume(bench, tmp_path, when, seeds) -> None:
    out = tmp_path / "run"
    proc = started(bench.run(out, "--seeds", seeds), tmp_path / "first")
    conditions = {
        "preparing": lambda: b"preparing" in (tmp_path / "first" / "stderr").read_bytes(),
        "first-job": lambda: (out / "manifest.json").is_file(),
        "after-a-job": lambda: torch_records(out) >= len(ROLES),
    }
    wait_until(conditions[when], proc)
    workers = workers_of(proc)
    proc.kill()  # the driver only: its workers see their input end and leave
    proc.wait()
    wait_gone(workers)
    before = lines(out) if (out / "records.jsonl").is_file() else []
    if (out / "manifest.json").is_file():  # it says running, but no process holds the folder
        assert manifest(out)["status"] == "running" and read_run(out).manifest["status"] == "interrupted"

    resumed = distillbench(bench.run(out, "--resume", "--seeds", seeds))
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert_complete(out, seeds=int(seeds))
    assert lines(out)[: len(before)] == before  # nothing written before was lost or rewritten
    if (out / "manifest.json").is_file() and len(manifest(out)["invocations"]) == 2:
        assert manifest(out)["invocations"][0]["status"] == "interrupted"


def test_kill_9_of_a_worker_fails_its_job_and_resume_reruns_it(bench, tmp_path) -> None:
    out = tmp_path / "run"
    proc = started(bench.run(out), tmp_path / "first")
    wait_until(lambda: torch_records(out) >= len(ROLES) and workers_of(proc), proc)
    for pid in workers_of(proc):
        os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=180) == 0
    failed = [r for r in lines(out) if r["status"] == "failed"]
    assert {r["seed"] for r in failed} == {1} and all("worker process died" in r["error"] for r in failed)
    assert manifest(out)["jobs"]["failed"] == 1

    resumed = distillbench(bench.run(out, "--resume"))
    assert resumed.returncode == 0 and "1 jobs (3 already done)" in resumed.stderr, resumed.stderr
    assert_complete(out, seeds=2)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT-twice"])
def test_sigterm_and_a_second_ctrl_c_mark_the_run_interrupted(bench, tmp_path, how) -> None:
    out = tmp_path / "run"
    proc = started(bench.run(out, "--seeds", "3"), tmp_path / "first")
    wait_until(lambda: torch_records(out) >= len(ROLES), proc)
    workers = workers_of(proc)
    if how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    else:  # Ctrl-C in a terminal reaches the whole process group, workers included; then once more
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(timeout=60)
    one_clean_line(
        code,
        (tmp_path / "first" / "stderr").read_text(),
        143 if how == "SIGTERM" else 130,
        rf"distillbench: interrupted \({how.split('-')[0]}\); the run is marked interrupted in .*--resume",
    )
    m = manifest(out)
    assert m["status"] == "interrupted" and m["invocations"][-1]["status"] == "interrupted"
    assert m["jobs"]["ok"] + m["jobs"]["missing"] == 6
    wait_gone(workers, timeout=5)  # the driver ended its workers

    resumed = distillbench(bench.run(out, "--resume", "--seeds", "3"))
    assert resumed.returncode == 0, resumed.stderr
    assert_complete(out, seeds=3)


# -- a full disk (a small tmpfs, where this machine lets us mount one), a folder that takes no new file


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(options)`: a tmpfs mounted in tmp_path/disk (skips where mount is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def mounted(options: str) -> Path:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        return mount

    yield mounted
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_stops_the_run_cleanly_and_resume_finishes_it(bench, tmp_path, small_disk) -> None:
    # 21 pages of 4 KiB: the run folder's reserve (16), the manifest (1), and records for 3 or 4 jobs of 8
    disk = small_disk("size=84k")
    out = disk / "run"
    result = distillbench(bench.run(out, "--seeds", "8"))
    one_clean_line(
        result.returncode,
        result.stderr,
        4,
        r"distillbench: error: writing .*records.jsonl: No space left on device; .*marked failed.*--resume",
    )
    records = lines(out)  # whole lines only, and whole jobs only: a job's records are written all or none
    jobs = Counter((r["seed"], r["framework"]) for r in records)
    assert all(n == len(REFERENCES if framework == "reference" else ROLES) for (_, framework), n in jobs.items())
    m = manifest(out)
    assert m["status"] == "failed" and "No space left on device" in m["invocations"][-1]["reason"]
    assert 0 < m["jobs"]["ok"] == len(jobs) and m["jobs"]["missing"] == 16 - m["jobs"]["ok"]

    subprocess.run(["mount", "-o", "remount,size=1m", str(disk)], check=True)
    resumed = distillbench(bench.run(out, "--resume", "--seeds", "8"))
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert_complete(out, seeds=8)
    assert lines(out)[: len(records)] == records


def test_a_folder_that_stops_accepting_files_mid_run(bench, tmp_path) -> None:
    """`chattr +i` on the run folder once its manifest is there (as `chmod a-w` does for a user
    other than root): files open already can be written, no file can be created or renamed."""
    out = tmp_path / "run"
    proc = started(bench.run(out, "--seeds", "1"), tmp_path / "first")
    wait_until(lambda: (out / "manifest.json").is_file(), proc)
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        proc.kill()
        pytest.skip("chattr +i is not available here")
    try:
        code = proc.wait(timeout=120)
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    one_clean_line(
        code,
        (tmp_path / "first" / "stderr").read_text(),
        4,
        r"distillbench: error: writing .*records.jsonl: Operation not permitted; .*marked failed.*--resume",
    )
    m = manifest(out)  # rewritten in place: the folder took no new file, the manifest file new contents
    assert m["status"] == "failed" and "Operation not permitted" in m["invocations"][-1]["reason"]
    assert not (out / "records.jsonl").exists()

    resumed = distillbench(bench.run(out, "--resume", "--seeds", "1"))
    assert resumed.returncode == 0, resumed.stderr
    assert_complete(out, seeds=1)


# -- corrupt and hostile run folders: one reader, one clean line (or a warning naming the line)


@pytest.fixture(scope="module")
def finished(bench, tmp_path_factory) -> Path:
    """A complete run of 2 jobs (iris, seeds 0 and 1, torch), to be copied and broken."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = distillbench(bench.run(out))
    assert result.returncode == 0, result.stderr
    return out


def copy_of(run: Path, folder: Path, name: str = "run") -> Path:
    shutil.copytree(run, folder / name, ignore=shutil.ignore_patterns(".lock"))
    return folder / name


def rewrite(out: Path, edit) -> None:
    """Replace records.jsonl's lines with edit(lines), a list of str."""
    text = (out / "records.jsonl").read_text().splitlines()
    (out / "records.jsonl").write_text("".join(line + "\n" for line in edit(text)))


def finished_args(finished: Path, out: Path) -> list[str]:
    """The arguments of the command that wrote `finished`, pointed at `out`."""
    args = manifest(finished)["command"][1:]
    args[args.index("--out") + 1] = str(out)
    return args


def damage(out: Path, how) -> int:
    """Apply `how` to the line of seed 1's student_kd record; its line number."""
    text = (out / "records.jsonl").read_text().splitlines()
    (index,) = [i for i, t in enumerate(text) if '"seed": 1,' in t and '"role": "student_kd"' in t]
    rewrite(out, lambda lines: [how(t) if i == index else t for i, t in enumerate(lines)])
    return index + 1


CORRUPT_LINES = {  # applied to seed 1's student_kd record
    "garbage": lambda line: "}{ not json",
    "a list": lambda line: "[1, 2]",
    "metrics of the wrong type": lambda line: line.replace('"metrics": {', '"metrics": "x", "was": {', 1),
    "a seed of the wrong type": lambda line: line.replace('"seed": 1', '"seed": "1"', 1),
    "no role": lambda line: line.replace('"role": ', '"rolle": ', 1),
    "an unknown status": lambda line: line.replace('"status": "ok"', '"status": "fine"', 1),
}


@pytest.mark.parametrize("kind", list(CORRUPT_LINES))
def test_a_corrupt_line_is_named_refused_or_skipped(finished, tmp_path, kind, capsys, caplog) -> None:
    out = copy_of(finished, tmp_path)
    line = damage(out, CORRUPT_LINES[kind])
    where = f"{out / 'records.jsonl'} line {line}: "
    with pytest.raises(UserError) as refused:
        read_run(out)
    assert str(refused.value).startswith(where) and "\n" not in str(refused.value)
    run = read_run(out, skip_damaged=True)
    assert where in caplog.text + capsys.readouterr().err  # a warning (through logging)
    assert [d.line for d in run.damaged] == [line] and (61, 1, None, "torch") in run.jobs.unfinished
    why = "incomplete: 2 of its 3 records were written (none for student_kd)"
    assert run.jobs.unfinished[(61, 1, None, "torch")].startswith(why)


def test_nan_in_records_reads_as_null(finished, tmp_path) -> None:
    out = copy_of(finished, tmp_path)
    rewrite(out, lambda text: [re.sub(r'"accuracy": [0-9.]+', '"accuracy": NaN', t) for t in text])
    run = read_run(out)
    assert len(run.jobs.ok) == 4 and all(r["metrics"]["accuracy"] is None for r in run.records)


def test_a_corrupt_line_through_every_command(finished, tmp_path, capsys) -> None:
    out = copy_of(finished, tmp_path)
    line = damage(out, CORRUPT_LINES["garbage"])
    where = re.escape(f"{out / 'records.jsonl'} line {line}: not valid JSON")

    # The gates refuse a damaged input: exit 2 (never 1, a regression), one line.
    compare = distillbench(command("compare", str(finished), str(out)))
    one_clean_line(compare.returncode, compare.stderr, 2, rf"distillbench: error: {where}")
    baseline = ("baseline", "update", str(out), "--name", "x", "--baselines", str(tmp_path / "b"))
    one_clean_line(*in_process(capsys, *baseline), 2, rf"distillbench: error: {where}")
    # The report skips the line, says so, and shows the job it belonged to as incomplete.
    report = distillbench(command("report", str(out), "--out", str(tmp_path / "report")))
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr
    assert re.search(rf"distillbench: warning: {where}.*skipped", report.stderr)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "incomplete: 2 of its 3 records" in md and "every planned job finished ok" not in md

    # --resume moves the line aside (kept, never deleted), runs its job again: the folder is whole again.
    resumed = distillbench(command(*finished_args(finished, out), "--resume"))
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert re.search(rf"warning: {where}.*skipped", resumed.stderr)
    assert "warning: moved 1 damaged line(s) of" in resumed.stderr and "1 jobs (3 already done)" in resumed.stderr
    assert_complete(out, seeds=2)
    assert (out / "records.rejected.jsonl").read_text() == "}{ not json\n"
    assert in_process(capsys, "compare", str(finished), str(out), "--fail-on", "none")[0] == 0


@pytest.mark.parametrize(
    "content", ["[]", "{}", '{"run_id": 3}', "", "\xff"], ids=["list", "empty-object", "bad-type", "empty", "binary"]
)
def test_a_manifest_that_is_not_one(finished, tmp_path, content, capsys) -> None:
    out = copy_of(finished, tmp_path)
    (out / "manifest.json").write_bytes(content.encode("latin-1"))
    pattern = rf"distillbench: error: {re.escape(str(out / 'manifest.json'))}: not (a run manifest|valid JSON)"
    for args in (
        ["report", str(out), "--out", str(tmp_path / "r")],
        ["compare", str(finished), str(out)],
        ["compare", str(out), str(finished)],
        ["baseline", "update", str(out), "--baselines", str(tmp_path)],
        ["history", str(out), "--out", str(tmp_path / "h")],
        [*finished_args(finished, out), "--resume"],
    ):
        one_clean_line(*in_process(capsys, *args), 2, pattern)


def test_a_killed_run_reads_as_interrupted(finished, tmp_path, capsys) -> None:
    """A manifest left 'running' by a run that no process holds (kill -9, power cut, a folder that
    took no more writes) is read as interrupted; a run that holds it is running."""
    out = copy_of(finished, tmp_path)
    (out / "manifest.json").write_text(json.dumps(manifest(out) | {"status": "running"}))
    assert read_run(out).manifest["status"] == "interrupted"
    assert "interrupted (its manifest says running" in str(run_table(read_run(out).manifest).rows)
    baseline = ("baseline", "update", str(out), "--name", "x", "--baselines", str(tmp_path / "b"))
    one_clean_line(*in_process(capsys, *baseline), 2, r"distillbench: error: .*: the run is interrupted, not complete")
    folder = RunFolder(out)
    try:
        assert read_run(out).manifest["status"] == "running"
    finally:
        folder.close()


# -- --resume with another plan, and in a moved folder


@pytest.mark.parametrize(
    "change",
    [
        ["--datasets", "61,531"],
        ["--seeds", "3"],
        ["--frameworks", "torch,tensorflow"],
        ["--deploy"],
        ["--config", "seed"],
    ],
    ids=lambda c: c[0],
)
def test_resume_with_another_plan_is_refused_and_changes_nothing(finished, tmp_path, change, capsys) -> None:
    out = copy_of(finished, tmp_path)
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    args = (
        [a for a in finished_args(finished, out) if a != "--no-deploy"]
        if change == ["--deploy"]
        else [*finished_args(finished, out), *change]
    )
    one_clean_line(
        *in_process(capsys, *args, "--resume"),
        2,
        rf"distillbench: error: --resume {re.escape(str(out))}: the plan differs from the run's: ",
    )
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before


def test_a_moved_run_resumes_and_counts_its_jobs(finished, tmp_path) -> None:
    out = copy_of(finished, tmp_path, "moved-elsewhere")
    rewrite(
        out, lambda text: [t for t in text if not ('"seed": 1,' in t and '"framework": "torch"' in t)]
    )  # seed 1's job lost
    resumed = distillbench(command(*finished_args(finished, out), "--resume"))
    assert resumed.returncode == 0 and "1 jobs (3 already done)" in resumed.stderr, resumed.stderr
    assert_complete(out, seeds=2)
    assert manifest(out)["run_id"] == manifest(finished)["run_id"] == "run"  # the run keeps its identity
    assert {r["run_id"] for r in lines(out)} == {"run"}


# -- 2. a job is done only when every record it should produce is there and ok


def test_a_job_with_a_missing_record_is_not_done(finished, tmp_path, capsys) -> None:
    out = copy_of(finished, tmp_path)
    rewrite(out, lambda text: [t for t in text if not ('"seed": 1' in t and '"role": "student_scratch"' in t)])
    run = read_run(out)
    why = "incomplete: 2 of its 3 records were written (none for student_scratch)"
    assert run.jobs.counts() == {"planned": 4, "ok": 3, "failed": 0, "missing": 1}
    assert run.jobs.unfinished[(61, 1, None, "torch")].startswith(why)
    assert why in str(failed_table(run.records, run.manifest, {}).rows)  # the report's Failed jobs
    one_clean_line(
        *in_process(
            capsys, "baseline", "update", str(out), "--name", "x", "--allow-failed", "--baselines", str(tmp_path / "b")
        ),
        2,
        r"distillbench: error: .*1 of its 4 jobs are incomplete or not run .*--resume",
    )
    # compare: a job the candidate lacks is a regression (exit 1), as documented
    assert in_process(capsys, "compare", str(finished), str(out), "--fail-on", "quality")[0] == 1

    resumed = distillbench(command(*finished_args(finished, out), "--resume"))
    assert resumed.returncode == 0 and "1 jobs (3 already done)" in resumed.stderr, resumed.stderr
    assert_complete(out, seeds=2)
    assert in_process(capsys, "baseline", "update", str(out), "--name", "x", "--baselines", str(tmp_path / "b"))[0] == 0


def test_a_config_file_that_is_not_utf8(bench, tmp_path, capsys) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes('name = "caf\N{LATIN SMALL LETTER E WITH ACUTE}"\n'.encode("latin-1"))
    one_clean_line(
        *in_process(capsys, *bench.run(tmp_path / "run", "--config", str(config))[1:]),
        2,
        r"distillbench: error: .*latin1.toml: not UTF-8 text",
    )
    assert not (tmp_path / "run").exists()


def test_a_crash_is_never_read_as_a_regression(finished, tmp_path, capsys, monkeypatch) -> None:
    """A bug in compare keeps its traceback and exits 3, not 1 (which CI reads as a regression)."""
    import distillbench.benchmarks.tracking.compare as compare

    monkeypatch.setattr(compare, "read_run", lambda *a, **k: 1 / 0)
    code, stderr = in_process(capsys, "compare", str(finished), str(finished))
    assert code == 3 and "ZeroDivisionError" in stderr and "Traceback" in stderr


@pytest.mark.parametrize(
    "args",
    [["--datasets", ","], ["--job-timeout", "nan"], ["--timing-budget", "inf"], ["--out", "/proc/distillbench"]],
    ids=lambda a: " ".join(a),
)
def test_run_options_that_cannot_work(bench, tmp_path, capsys, args) -> None:
    one_clean_line(*in_process(capsys, *bench.run(tmp_path / "run")[1:], *args), 2, r"distillbench: error: ")
