"""`distillbench history --html`: one self-contained page, one plot per (dataset, framework, role,
metric), each step between consecutive runs marked where `compare` calls it a change.

Three runs made from tests/data/run_small (a real run) by copying it. The edits are MADE UP for
the test: later commits and start times, a dataset renamed to an HTML tag, a suite named with a
script, and iris's torch distilled-student accuracy lowered by 0.1 in every seed in the second run
(a change by compare's rule: beyond the 0.01 floor) and raised by 0.005 in the third (within the
floor: unchanged).
"""

from __future__ import annotations

import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib import image

from distillbench.cli import main
from test_report import RUN_SMALL, browse, copy_run

HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_SUITE = "</table><script>alert(2)</script>"
CHANGED = ("iris (61)", "torch", "student_kd", "accuracy")
METRICS = ("primary", "kd_gain", "latency_p50_us", "n_params")  # n_params: a metric compare does not judge
DAY = 86400.0


def shift_accuracy(run: Path, by: float) -> None:
    """Made up: iris's torch distilled-student accuracy moved by ``by`` in every seed."""
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    for r in records:
        if (r["dataset_id"], r["framework"], r["role"]) == (61, "torch", "student_kd"):
            r["metrics"]["accuracy"] += by
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("history") / "results"
    manifest = json.loads((RUN_SMALL / "manifest.json").read_text())
    for i, (commit, shift) in enumerate((("a" * 40, 0.0), ("b" * 40, -0.1), ("c" * 40, -0.095))):
        environment = manifest["environment"] | {"git": {"commit": commit, "dirty": False}}
        run = copy_run(
            root / f"run{i}",
            names={187: HOSTILE},
            run_id=f"run{i}",
            started=manifest["started"] + i * DAY,
            environment=environment,
            suite=HOSTILE_SUITE,
        )
        if shift:
            shift_accuracy(run, shift)
    out = root.parent / "out"
    assert main(["history", str(root), "--html", "--out", str(out), *(f"--metric={m}" for m in METRICS)]) == 0
    return out / "history.html"


class Page(HTMLParser):
    """The page's tags and attributes, its text, and per plot (figure) its caption and step classes."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.plots: dict[str, dict] = {}
        self._figure: dict | None = None
        self._in_caption = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "figure":
            self._figure = self.plots[attrs["id"]] = {"caption": "", "steps": [], "marks": []}
        elif self._figure is not None and tag == "line" and (attrs.get("class") or "").startswith("step "):
            self._figure["steps"].append(attrs["class"].removeprefix("step "))
        elif self._figure is not None and tag == "circle" and (attrs.get("class") or "").startswith("mark "):
            self._figure["marks"].append(attrs["class"].removeprefix("mark "))
        self._in_caption = tag == "figcaption"

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        if tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_caption and self._figure is not None:
            self._figure["caption"] += data


def expected_plots() -> set[tuple]:
    """(dataset, framework, role, metric) of every ok record with a number for one of METRICS."""
    out = set()
    for r in map(json.loads, (RUN_SMALL / "records.jsonl").read_text().splitlines()):
        if r["status"] != "ok":
            continue
        name = HOSTILE if r["dataset_id"] == 187 else r["dataset_name"]
        for metric in METRICS:
            metric = r["primary_metric"] if metric == "primary" else metric
            value = r["metrics"].get(metric) if metric in r["metrics"] else r.get(metric)
            if value is not None:
                out.add((f"{name} ({r['dataset_id']})", r["framework"], r["role"], metric))
    return out


def test_the_page_is_self_contained_and_script_free(page: Path) -> None:
    parsed = Page(page.read_text())
    ids = {attrs["id"] for _, attrs in parsed.tags if "id" in attrs}
    assert not {tag for tag, _ in parsed.tags} & {"script", "img", "iframe", "link", "object", "embed"}
    assert [tag for tag, _ in parsed.tags].count("style") == 1  # the page's own CSS, in the head
    for tag, attrs in parsed.tags:
        assert "src" not in attrs and not any(name.startswith("on") for name in attrs), (tag, attrs)
        if "href" in attrs:  # in-page anchors only, each to an element that exists
            assert attrs["href"].startswith("#") and attrs["href"][1:] in ids


def test_one_plot_per_dataset_framework_role_and_metric(page: Path) -> None:
    parsed = Page(page.read_text())
    captions = [tuple(p["caption"].split(" · ")) for p in parsed.plots.values()]
    assert len(captions) == len(set(captions))
    assert set(captions) == expected_plots()
    assert all(len(p["steps"]) == 2 for p in parsed.plots.values())  # 3 runs: 2 steps in each plot
    rows = [tag for tag, _ in parsed.tags].count("tr")
    assert rows == 1 + 3  # the table of runs: a header and one row per run


def test_the_changed_step_is_marked_and_the_unchanged_one_is_not(page: Path) -> None:
    parsed = Page(page.read_text())
    plots = {tuple(p["caption"].split(" · ")): (plot_id, p) for plot_id, p in parsed.plots.items()}
    plot_id, changed = plots[CHANGED]
    assert changed["steps"] == ["regressed", "unchanged"] and changed["marks"] == ["regressed"]
    others = [p for key, (_, p) in plots.items() if key != CHANGED]
    steps = {
        metric: {s for key, (_, p) in plots.items() if key != CHANGED and key[3] == metric for s in p["steps"]}
        for metric in ("accuracy", "rmse", "kd_gain", "latency_p50_us", "n_params")
    }
    assert steps == {
        "accuracy": {"unchanged"},
        "rmse": {"unchanged"},
        "kd_gain": {"unchanged"},
        "latency_p50_us": {"unchanged"},
        "n_params": {"unjudged"},
    }  # compare does not judge n_params
    assert not any(p["marks"] for p in others)
    changes = [attrs for tag, attrs in parsed.tags if tag == "li" and attrs.get("class")]
    assert changes == [{"class": "regressed"}]  # the list of changes: this step alone, linked to its plot
    assert ("a", {"href": f"#{plot_id}"}) in parsed.tags
    assert "iris (61) · torch · student_kd · accuracy: aaaaaaa → bbbbbbb: regressed" in "".join(parsed.text)


def test_names_from_the_runs_are_escaped(page: Path) -> None:
    text = page.read_text()
    assert HOSTILE not in text and HOSTILE_SUITE not in text and "<script" not in text.lower()
    shown = "".join(Page(text).text)
    assert HOSTILE in shown and HOSTILE_SUITE in shown  # as text, whole


@pytest.mark.slow
def test_the_page_renders_in_a_headless_browser(page: Path, tmp_path: Path) -> None:
    state = """({plots: document.querySelectorAll('figure.plot svg').length,
      scripts: document.scripts.length, images: document.images.length,
      regressed: [...document.querySelectorAll('line.step.regressed')].map(l => getComputedStyle(l).stroke),
      width: document.querySelector('figure.plot svg').getBoundingClientRect().width,
      text: document.body.innerText})"""
    state, shot, errors = browse(page, state, tmp_path / "profile")
    assert errors == []  # no script error, no alert, no resource refused by the page's policy
    assert state["plots"] == len(expected_plots()) and state["scripts"] == state["images"] == 0
    assert state["regressed"] == ["rgb(207, 34, 46)"] and state["width"] > 300  # drawn, in its colour
    assert HOSTILE in state["text"] and HOSTILE_SUITE in state["text"]  # shown as text, never run
    pixels = image.imread(io.BytesIO(shot))
    assert pixels[..., :3].std() > 0.05  # not blank
