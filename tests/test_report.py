"""`distillbench report`: built from the fixed results folder tests/data/run_small (a real tiny run,
see its README), checked for its numbers, its files, its escaping, and in a real headless browser."""

from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import io
import itertools
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image
from scipy import stats as sp

from distillbench.benchmarks.reporting.blocks import Table
from distillbench.benchmarks.reporting.report import SECTIONS, build, report_data, section, write_report
from distillbench.benchmarks.store.run_folder import read_run

RUN_SMALL = Path(__file__).parent / "data" / "run_small"
XSS = "<script>alert(1)</script>"
PIPE = "veh|icle $x$"  # a table separator in Markdown and a mathtext marker in matplotlib
FIGURES = ("quality", "retention_speedup", "framework_time", "latency", "critical_difference")
TABLES = ("run", "datasets", "results", "frameworks", "across_datasets", "ranks", "payoff", "payoff_ranks", "failed")


def copy_run(dest: Path, names: dict[int, str] | None = None, keep=lambda record: True, **manifest_changes) -> Path:
    """A copy of run_small, its dataset names replaced by ``names``, only the records ``keep`` accepts."""
    dest.mkdir(parents=True)
    names = names or {}
    records = [json.loads(line) for line in (RUN_SMALL / "records.jsonl").read_text().splitlines()]
    with open(dest / "records.jsonl", "w") as f:
        for r in filter(keep, records):
            r["dataset_name"] = names.get(r["dataset_id"], r["dataset_name"])
            f.write(json.dumps(r) + "\n")
    manifest = json.loads((RUN_SMALL / "manifest.json").read_text()) | manifest_changes
    for d in manifest["datasets"]:
        d["name"] = names.get(d["id"], d.get("name"))
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The report of run_small with wine (187) renamed to a script tag and vehicle (54) to PIPE."""
    tmp = tmp_path_factory.mktemp("report")
    run = copy_run(tmp / "run_small", names={187: XSS, 54: PIPE})
    return write_report(run, tmp / "out")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fixture_records() -> list[dict]:
    return [json.loads(line) for line in (RUN_SMALL / "records.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- files


def test_the_report_writes_every_file_and_nothing_partial(report: Path) -> None:
    for name in FIGURES:
        png = image.imread(report / "figures" / f"{name}.png")
        assert png.shape[0] > 100 and png.shape[1] > 100
        assert ET.parse(report / "figures" / f"{name}.svg").getroot().tag.endswith("svg")
    for name in TABLES:
        assert read_csv(report / "tables" / f"{name}.csv")
        tex = (report / "tables" / f"{name}.tex").read_text()
        assert tex.startswith(r"\begin{tabular}") and r"\bottomrule" in tex
    assert not list(report.rglob("*.partial"))


def test_the_html_is_one_self_contained_file(report: Path) -> None:
    text = (report / "report.html").read_text()
    assert not re.search(r"<script|<link|\b(src|href)=\"(?!data:)", text, re.IGNORECASE)
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(embedded) == len(FIGURES)
    assert {base64.b64decode(data) for data in embedded} == {
        (report / "figures" / f"{n}.png").read_bytes() for n in FIGURES
    }


# ---------------------------------------------------------------- numbers


def test_results_are_means_with_student_t_intervals_over_seeds(report: Path) -> None:
    records = [r for r in fixture_records() if r["status"] == "ok"]
    rows = {(r["dataset"], r["framework"]): r for r in read_csv(report / "tables" / "results.csv")}
    assert len(rows) == 12  # 6 datasets x 2 frameworks; the dataset that failed has no row
    for dataset_id, name in ((183, "abalone"), (61, "iris"), (54, PIPE)):
        for framework in ("torch", "tensorflow"):
            row = rows[(name, framework)]
            for role in ("teacher", "student_kd", "student_scratch"):
                values = [
                    r["metrics"][r["primary_metric"]]
                    for r in records
                    if (r["dataset_id"], r["framework"], r["role"]) == (dataset_id, framework, role)
                ]
                assert len(values) == 3
                half = sp.t.ppf(0.975, 2) * sp.sem(values)
                assert float(row[role]) == pytest.approx(np.mean(values), rel=1e-12)
                assert float(row[f"{role} ci95"]) == pytest.approx(half, rel=1e-9)
            kd = [
                r
                for r in records
                if (r["dataset_id"], r["framework"], r["role"]) == (dataset_id, framework, "student_kd")
            ]
            assert float(row["KD gain %"]) == pytest.approx(np.mean([r["kd_gain"] for r in kd]))
            assert float(row["retention % (kd)"]) == pytest.approx(np.mean([r["retention"] for r in kd]))
            assert float(row["speed-up"]) == pytest.approx(np.mean([r["speedup"] for r in kd]))
            assert float(row["student p50 us"]) == pytest.approx(np.median([r["latency_p50_us"] for r in kd]))
            assert row["seeds"] == "3/3"


def test_the_markdown_holds_the_expected_numbers(report: Path) -> None:
    md = (report / "report.md").read_text()
    # the same numbers in both frameworks (parity); the values of this fixed run
    for framework in ("torch", "tensorflow"):
        # no reference models in this run (written before they existed): "-" under linear and hgb
        assert (
            f"| iris | {framework} | accuracy | 0.3222 ± 0.417 | 0.4111 ± 0.126 | 0.4 ± 0.143 | - | - | 151.9 ± 174 |"
            in md
        )
        assert f"| abalone | {framework} | rmse | 2.562 ± 0.487 | 2.994 ± 0.936 | 2.993 ± 0.961 |" in md
    # across datasets: per framework 3 wins, 0 ties, 3 losses; exact Wilcoxon p of W = 6 over 6 datasets
    assert "| torch | 6 | 94.61 | 97.79 | 0.6573 | 3/0/3 | 6 | 0.4375 |" in md
    assert "Friedman test: chi2 = 3.535, p = 0.618; Nemenyi critical difference (alpha 0.05): 3.08." in md
    assert "| torch teacher | 2.667 |" in md


def test_the_gap_closed_is_given_where_the_teachers_lead_exceeds_the_seed_noise(report: Path) -> None:
    """Recomputed from the records: per dataset and framework, the teacher's lead over the scratch
    student paired over seeds; where its 95% t-interval lies above 0, the mean over seeds of
    100 (kd - scratch) / (teacher - scratch); elsewhere 'no gap to close'."""
    ok = [r for r in fixture_records() if r["status"] == "ok"]
    rows = {(row["dataset"], row["framework"]): row for row in read_csv(report / "tables" / "payoff.csv")}
    names = {r["dataset_id"]: r["dataset_name"] for r in ok}
    present = 0
    for dataset_id, framework in {(r["dataset_id"], r["framework"]) for r in ok}:
        by_role = {
            role: {
                r["seed"]: r["metrics"][r["primary_metric"]]
                for r in ok
                if (r["dataset_id"], r["framework"], r["role"]) == (dataset_id, framework, role)
            }
            for role in ("teacher", "student_kd", "student_scratch")
        }
        seeds = sorted(by_role["teacher"])
        sign = 1 if next(r["primary_metric"] for r in ok if r["dataset_id"] == dataset_id) == "accuracy" else -1
        lead = np.array([sign * (by_role["teacher"][s] - by_role["student_scratch"][s]) for s in seeds])
        half = sp.t.ppf(0.975, len(lead) - 1) * lead.std(ddof=1) / np.sqrt(len(lead))
        row = rows[({187: XSS, 54: PIPE}.get(dataset_id, names[dataset_id]), framework)]
        assert float(row["gap"]) == pytest.approx(lead.mean()) and float(row["gap ci95"]) == pytest.approx(half)
        if lead.mean() - half > 0:
            present += 1
            closed = [
                100
                * (by_role["student_kd"][s] - by_role["student_scratch"][s])
                / (by_role["teacher"][s] - by_role["student_scratch"][s])
                for s in seeds
            ]
            assert float(row["gap closed %"]) == pytest.approx(np.mean(closed))
        else:
            assert row["gap closed %"] == "no gap to close"
    # These tiny teachers (5 epochs) lead nowhere by more than the seed noise; the other case: test_payoff.py.
    md = (report / "report.md").read_text()
    assert present == 0 and "On no dataset does the teacher beat the scratch student by more than the seed noise" in md
    assert "| torch | 6 | 0.6573 | 0/6 | - | 3/0/3 |" in md  # median KD gain and win/tie/loss as in Across datasets


def test_the_frameworks_are_compared_paired_over_seeds(report: Path) -> None:
    rows = read_csv(report / "tables" / "frameworks.csv")
    assert len(rows) == 6 * 3 and {r["frameworks"] for r in rows} == {"tensorflow vs torch"}
    iris = next(r for r in rows if r["dataset"] == "iris" and r["role"] == "teacher")
    assert float(iris["quality difference"]) == 0 and iris["agree"] == "yes"  # identical in both frameworks
    records = [r for r in fixture_records() if r["status"] == "ok" and r["dataset_id"] == 61 and r["role"] == "teacher"]
    mean = {f: np.mean([r["train_seconds"] for r in records if r["framework"] == f]) for f in ("torch", "tensorflow")}
    assert float(iris["training time ratio"]) == pytest.approx(mean["tensorflow"] / mean["torch"])
    for r in rows:
        assert float(r["p50 latency ratio"]) > 0 and float(r["throughput ratio"]) > 0


def test_failed_jobs_are_listed_with_their_reason(report: Path) -> None:
    failed = read_csv(report / "tables" / "failed.csv")
    assert [(r["id"], r["framework"], r["seeds"]) for r in failed] == [
        ("9999", "tensorflow", "0, 1, 2"),
        ("9999", "torch", "0, 1, 2"),
    ]
    assert all("OpenML dataset 9999 is not in the cache" in r["reason"] for r in failed)
    assert "## Failed jobs" in (report / "report.md").read_text()


def test_the_run_header_says_what_ran_where_and_how_long(report: Path) -> None:
    manifest = json.loads((RUN_SMALL / "manifest.json").read_text())
    header = {r["field"]: r["value"] for r in read_csv(report / "tables" / "run.csv")}
    assert header["run"] == "run_small" and header["status"] == "complete"
    assert header["schema version"] == "1"  # written before records had a schema_version
    assert manifest["environment"]["git"]["commit"][:12] in header["code"]
    assert "torch 2.13.0" in header["versions"] and "tensorflow-cpu 2.21.0" in header["versions"]
    assert header["seeds"] == "0, 1, 2" and header["frameworks"] == "torch, tensorflow"
    assert "min" in header["duration"] and header["harness overhead"].endswith("% of the run's wall time")
    assert "teacher [16]" in header["config"] and "student [4]" in header["config"]


# ---------------------------------------------------------------- convergence and sanity


def with_endings_and_references(record: dict) -> list[dict]:
    """run_small's record as a run of now writes it: how its training ended and its flags (iris torch
    student_kd ended on max_steps in seeds 0 and 1, boston tensorflow's teacher is far below hgb in
    seed 2), and, beside each ok teacher of torch, the dataset's reference records (linear: the
    teacher's quality; hgb: a little better)."""
    if record["status"] != "ok" or record["role"] not in ("teacher", "student_kd", "student_scratch"):
        return [record]
    where = (record["dataset_id"], record["framework"], record["role"])
    bound = where == (61, "torch", "student_kd") and record["seed"] < 2
    far = where == (531, "tensorflow", "teacher") and record["seed"] == 2
    record.update(
        stop_reason="max_steps" if bound else "early_stopping",
        steps=400,
        best_step=390 if bound else 200,
        final_learning_rate=0.001,
        flags=["budget"] if bound else ["far_below_hgb"] if far else [],
    )
    if where[1:] != ("torch", "teacher"):
        return [record]
    metric = record["primary_metric"]
    better = 0.01 if metric == "accuracy" else -0.1
    refs = [
        dict(
            record,
            framework="reference",
            role=role,
            stop_reason=how,
            flags=[],
            steps=9,
            best_step=9,
            metrics={metric: record["metrics"][metric] + shift},
        )
        for role, how, shift in (("linear", "converged", 0.0), ("hgb", "early_stopping", better))
    ]
    return [record, *refs]


def test_the_convergence_and_sanity_sections(tmp_path: Path) -> None:
    run = copy_run(tmp_path / "run", reference_roles=["linear", "hgb"])
    records = [out for r in fixture_records() for out in with_endings_and_references(r)]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report = write_report(run, tmp_path / "out")
    table = {(r["framework"], r["role"]): r for r in read_csv(report / "tables" / "convergence.csv")}
    assert (
        table[("torch", "student_kd")]["max_steps"] == "2" and table[("torch", "student_kd")]["early_stopping"] == "16"
    )
    assert table[("reference", "linear")]["converged"] == "18" and table[("reference", "hgb")]["models"] == "18"
    bound = read_csv(report / "tables" / "budget_bound.csv")
    assert [(r["dataset"], r["framework"], r["seed"], r["role"], r["stop reason"]) for r in bound] == [
        ("iris", "torch", "0", "student_kd", "max_steps"),
        ("iris", "torch", "1", "student_kd", "max_steps"),
    ]
    sanity = read_csv(report / "tables" / "sanity.csv")
    assert [(r["dataset"], r["framework"], r["seed"], r["role"]) for r in sanity] == [
        ("boston", "tensorflow", "2", "teacher")
    ]
    hgb = next(r for r in records if (r["dataset_id"], r["seed"], r["role"]) == (531, 2, "hgb"))
    assert float(sanity[0]["reference"]) == pytest.approx(hgb["metrics"]["rmse"])
    # The results: the references beside the models, the flags beside their numbers.
    results = {(r["dataset"], r["framework"]): r for r in read_csv(report / "tables" / "results.csv")}
    teacher = [
        r["metrics"]["accuracy"]
        for r in records
        if (r["dataset_id"], r["framework"], r["role"]) == (61, "torch", "teacher")
    ]
    assert float(results[("iris", "tensorflow")]["linear"]) == pytest.approx(np.mean(teacher))
    assert float(results[("iris", "torch")]["hgb"]) == pytest.approx(np.mean(teacher) + 0.01)
    kd = [
        r["metrics"]["accuracy"]
        for r in records
        if (r["dataset_id"], r["framework"], r["role"]) == (61, "torch", "student_kd")
    ]
    assert float(results[("iris", "torch")]["kd vs best reference %"]) == pytest.approx(
        np.mean([100 * k / (t + 0.01) for k, t in zip(kd, teacher)])
    )
    md = (report / "report.md").read_text()
    assert "| iris | torch | accuracy | 0.3222 ± 0.417 | 0.4111 ± 0.126 \\[budget 2/3\\] |" in md
    assert "far below hgb 1/3\\]" in md and "## Convergence" in md and "## Sanity checks" in md
    assert "Ended on the budget: 2 of 144 models." in md  # 6 datasets x 3 seeds x (2 x 3 models + 2 references)


# ---------------------------------------------------------------- escaping


def test_names_from_datasets_are_escaped(report: Path) -> None:
    html_text = (report / "report.html").read_text()
    assert XSS not in html_text and "<script" not in html_text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    md = (report / "report.md").read_text()
    assert XSS not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert r"veh\|icle \$x\$" in md
    lines = md.splitlines()
    for header, rule in itertools.pairwise(lines):  # every table row has as many cells as its header
        if rule.startswith("|---"):
            columns = header.count("|")
        if header.startswith(r"| veh\|icle"):
            assert len(re.findall(r"(?<!\\)\|", header)) == columns


@pytest.mark.slow
def test_a_single_seed_and_a_single_framework_via_the_cli(tmp_path: Path) -> None:
    """`distillbench report` with no RUN_DIR: the newest run under results/, into reports/<run_id>/; one
    seed gives no interval, one framework no comparison, two datasets no CD diagram."""
    copy_run(
        tmp_path / "results" / "run_small",
        keep=lambda r: r["seed"] == 0 and r["framework"] == "torch" and r["dataset_id"] in (61, 531),
        seeds=[0],
        frameworks=["torch"],
        datasets=[d for d in json.loads((RUN_SMALL / "manifest.json").read_text())["datasets"] if d["id"] in (61, 531)],
    )
    stale = tmp_path / "reports" / "run_small" / "figures" / "critical_difference.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an earlier report")
    done = subprocess.run(
        [sys.executable, "-m", "distillbench.cli", "report"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "reports" / "run_small"
    assert str(Path("reports") / "run_small" / "report.html") in done.stderr
    rows = read_csv(out / "tables" / "results.csv")
    assert [(r["dataset"], r["framework"], r["seeds"]) for r in rows] == [
        ("iris", "torch", "1/1"),
        ("boston", "torch", "1/1"),
    ]
    assert rows[0]["teacher"] and rows[0]["teacher ci95"] == ""
    md = (out / "report.md").read_text()
    assert (
        "| iris | torch | accuracy | 0.5 | 0.4 | 0.3667 | - | - | 80 | 73.33 | - | 9.091 |" in md
    )  # seed 0's values, no interval
    assert "Needs results from two frameworks; this run has torch." in md
    assert "No critical-difference diagram: it needs at least 5 datasets with all results; this run has 2." in md
    assert not stale.exists() and not (out / "figures" / "framework_time.png").exists()
    assert (out / "figures" / "quality.png").exists() and (out / "report.html").exists()


# ---------------------------------------------------------------- the sections


def test_the_sections_in_the_reports_order_with_the_files_they_declare(report: Path) -> None:
    assert list(SECTIONS) == [
        "run_info",
        "datasets",
        "results",
        "convergence",
        "frameworks_compared",
        "across_datasets",
        "latency",
        "deployment",
        "sweep",
        "payoff",
        "failed_jobs",
    ]
    tables = [name for s in SECTIONS.values() for name in s.tables]
    figures = [name for s in SECTIONS.values() for name in s.figures]
    assert len(set(tables)) == len(tables) and len(set(figures)) == len(figures)  # each file made by one section
    # run_small (no sweep, no deployment formats): every file is declared, the absent ones are those sections'.
    assert {p.stem for p in (report / "tables").iterdir()} == set(TABLES) <= set(tables)
    assert {p.stem for p in (report / "figures").iterdir()} == set(FIGURES) <= set(figures)
    assert set(tables) - set(TABLES) == {
        *SECTIONS["convergence"].tables,
        *SECTIONS["deployment"].tables,
        *SECTIONS["sweep"].tables,
    }
    data = report_data(read_run(RUN_SMALL))
    assert SECTIONS["sweep"].build(data) == []  # a section that does not apply adds nothing


def test_a_section_may_make_only_the_files_it_declares(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("distillbench.benchmarks.reporting.report.SECTIONS", dict(SECTIONS))

    @section(tables=("extra",))
    def extra(data) -> list:
        return [("h2", "Extra"), Table("extra", ["n"], [[len(data.entries)]]), Table("stray", ["n"], [[0]])]

    with pytest.raises(ValueError, match=r"report section 'extra' makes \['stray'\], which it does not declare"):
        build(read_run(RUN_SMALL))


def test_a_missing_run_folder_is_a_one_line_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "distillbench.cli", "report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "nope" in done.stderr


# ---------------------------------------------------------------- in a real browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Chromium:
    """Headless chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: the
    browser reads NUL-terminated JSON on fd 3 and writes on fd 4); no webdriver, no network port."""

    def __init__(self, binary: str, profile: Path, width: int = 1280, height: int = 2000):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]  # clear of 3 and 4
        os.close(to_browser)
        os.close(from_browser)
        self.proc = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=lambda: (os.dup2(ends[0], 3), os.dup2(ends[1], 4)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in ends:
            os.close(fd)
        self._buffer, self._id, self.events = b"", 0, []

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self._id += 1
        os.write(
            self._write,
            json.dumps(
                {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
            ).encode()
            + b"\0",
        )
        deadline = time.monotonic() + timeout
        while (reply := self._next(deadline)).get("id") != self._id:
            self.events.append(reply)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._next(deadline))

    def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, EOFError, RuntimeError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._read)
        os.close(self._write)


PAGE_STATE = """Promise.all([...document.images].map(i => i.decode().then(() => true, () => false))).then(decoded => ({
  images: [...document.images].map((i, n) => ({src: i.src.slice(0, 22), width: i.naturalWidth, decoded: decoded[n]})),
  tables: Object.fromEntries([...document.querySelectorAll('table')].map(t => [t.id, t.rows.length])),
  scripts: document.scripts.length, text: document.body.innerText}))"""
ERROR_EVENTS = ("Runtime.exceptionThrown", "Page.javascriptDialogOpening")


def browse(page: Path, expression: str, profile: Path, width: int = 1280, height: int = 2000):
    """Open ``page`` in headless chromium (skipped where it is not installed): the value of the
    JavaScript ``expression`` evaluated on it, a screenshot (PNG bytes), and the errors the page
    raised (script errors, dialogs, resources refused by the page's policy, console errors)."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    browser = Chromium(binary, profile, width, height)
    try:
        target = next(t for t in browser.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        session = browser.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            session=session,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.events.clear()  # from here on: this page only
        browser.send("Page.navigate", session=session, url=page.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        value = browser.send(
            "Runtime.evaluate", session=session, expression=expression, awaitPromise=True, returnByValue=True
        )["result"]["value"]
        shot = base64.b64decode(browser.send("Page.captureScreenshot", session=session, format="png")["data"])
    finally:
        browser.close()
    errors = [
        e
        for e in browser.events
        if e.get("method") in ERROR_EVENTS
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
    ]
    return value, shot, errors


@pytest.mark.slow
def test_the_html_renders_in_a_headless_browser(report: Path, tmp_path: Path) -> None:
    page, shot, errors = browse(report / "report.html", PAGE_STATE, tmp_path / "profile")
    (report / "browser-screenshot.png").write_bytes(shot)  # to look at: beside the report under pytest's tmp

    assert errors == []  # no script error, no alert, no resource refused by the page's policy
    assert len(page["images"]) == len(FIGURES)
    assert all(i["src"] == "data:image/png;base64," and i["decoded"] and i["width"] > 300 for i in page["images"])
    assert {f"table-{name}" for name in TABLES} == set(page["tables"]) and min(page["tables"].values()) >= 2
    assert page["scripts"] == 0 and XSS in page["text"]  # the name shows as text, and never ran
    pixels = image.imread(io.BytesIO(shot))
    assert pixels.shape[:2] == (2000, 1280) and pixels[..., :3].std() > 0.05  # not blank


def test_the_sanity_table_says_why_a_student_is_below_the_linear_reference() -> None:
    """Made-up records of one split (accuracy; linear 0.90): three jobs where a student is flagged
    below the linear reference because its teacher is, because the other student is too, or
    because distillation alone pulled it below."""
    from distillbench.benchmarks.reporting.convergence import sanity_blocks

    def model(framework: str, role: str, accuracy: float, flags=()) -> dict:
        return {
            "dataset_id": 1, "seed": 0, "framework": framework, "role": role, "status": "ok", "error": None,
            "primary_metric": "accuracy", "metrics": {"accuracy": accuracy}, "stop_reason": "early_stopping",
            "flags": list(flags),
        }  # fmt: skip

    below = ("below_linear",)
    records = [
        model("reference", "linear", 0.90),
        model("reference", "hgb", 0.91),
        *(model("a", "teacher", 0.85), model("a", "student_kd", 0.86, below), model("a", "student_scratch", 0.95)),
        *(
            model("b", "teacher", 0.95),
            model("b", "student_kd", 0.80, below),
            model("b", "student_scratch", 0.80, below),
        ),
        *(model("c", "teacher", 0.95), model("c", "student_kd", 0.80, below), model("c", "student_scratch", 0.93)),
    ]
    (table,) = [b for b in sanity_blocks(records, {1: "d"}) if isinstance(b, Table)]
    why = {(row[1], row[3]): row[-1] for row in table.rows}
    assert why[("a", "student_kd")].startswith("its teacher is below the linear reference too")
    assert why[("b", "student_kd")].startswith("student_scratch too") and why[("b", "student_scratch")].startswith(
        "student_kd too"
    )
    assert why[("c", "student_kd")].startswith("only the distilled student")
