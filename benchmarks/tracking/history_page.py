"""`distillbench history --html`: the history as one self-contained page (``history.html``).

One plot per (dataset, framework, role, metric) over the runs, in history's order (``history.py``):
the mean over each run's ok seeds with the sd as a bar. Each step between two consecutive points is
judged by `compare`'s rule (``compare.compare_runs`` with its default thresholds, on the two runs'
folders): a step that `compare` calls improved or regressed is marked, and listed under the plots
with compare's change, margin and basis. Metrics `compare` does not judge (e.g. n_params) and steps
between runs it cannot read are drawn unjudged. The page is written as the report's
(``render.html_page``): every string from the runs escaped, no script, no outside resource; the
plots are inline SVG.
"""

from __future__ import annotations

import html
import itertools
from collections import defaultdict

from distillbench.benchmarks.reporting.blocks import Table
from distillbench.benchmarks.reporting.render import cell, html_page, html_table
from distillbench.benchmarks.store.run_folder import Run
from distillbench.benchmarks.tracking.compare import compare_runs
from distillbench.benchmarks.tracking.history import run_fields, run_rows
from distillbench.benchmarks.tracking.verdicts import UNCHANGED
from distillbench.errors import UserError
from distillbench.text import utc_time

WIDTH, HEIGHT = 360, 190
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 10, 46
MAX_LABELS = 12  # commits written under the x axis; the others are ticks (their points say which)

CSS = """
.plots { display: flex; flex-wrap: wrap; gap: 8px 16px; }
figure.plot { margin: 8px 0; }
svg { font: 10px sans-serif; background: #fff; }
svg .axis { stroke: #8c959f; }
svg .grid { stroke: #eaeef2; }
svg .bar { stroke: #57606a; }
svg .point { fill: #0969da; }
svg .step { stroke: #8c959f; stroke-width: 1.5; }
svg .step.unjudged { stroke-dasharray: 3 3; }
svg .step.improved { stroke: #1a7f37; stroke-width: 4; }
svg .step.regressed { stroke: #cf222e; stroke-width: 4; }
svg .step.advisory { stroke-dasharray: 6 3; }
svg .mark.improved { fill: #1a7f37; }
svg .mark.regressed { fill: #cf222e; }
.improved { color: #1a7f37; }
.regressed { color: #cf222e; }
"""


def _label(fields: dict) -> str:
    return f"{fields['commit'][:7] or '?'}{'*' if fields['dirty'] else ''}"


def _series(runs: list[Run], metrics: list[str]) -> dict[tuple, dict[int, dict]]:
    """(dataset_id, framework, role, metric) -> {run index: history row}, in history's row order."""
    series: defaultdict[tuple, dict[int, dict]] = defaultdict(dict)
    for i, run in enumerate(runs):
        for row in run_rows(run, metrics):
            series[(row["dataset_id"], row["framework"], row["role"], row["metric"])].setdefault(i, row)
    return dict(sorted(series.items(), key=lambda kv: (next(iter(kv[1].values()))["dataset"].lower(), kv[0][0])))


class _Verdicts:
    """`compare`'s row for a cell between two runs, each pair of runs compared once."""

    def __init__(self, runs: list[Run]):
        self.runs, self.notes = runs, list[str]()
        self._pairs: dict[tuple[int, int], dict | None] = {}

    def row(self, i: int, j: int, cell_key: tuple):
        if (i, j) not in self._pairs:
            try:
                comparison = compare_runs(self.runs[i].path, self.runs[j].path)
                self._pairs[(i, j)] = {(r.dataset_id, r.framework, r.role, r.metric): r for r in comparison.rows}
            except UserError as error:  # e.g. a damaged records line, which compare refuses
                self._pairs[(i, j)] = None
                self.notes.append(f"steps from run {i + 1} to run {j + 1} are not judged: {error}")
        rows = self._pairs[(i, j)]
        return rows.get(cell_key) if rows else None


def _svg(points: dict[int, dict], steps: list[tuple], labels: list[str]) -> str:
    """A line plot of the points (x: run index) with sd bars; each step drawn with its verdict's class."""
    n = len(labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    lows = [p["mean"] - (p["sd"] or 0.0) for p in points.values()]
    highs = [p["mean"] + (p["sd"] or 0.0) for p in points.values()]
    low, high = min(lows), max(highs)
    pad = 0.1 * (high - low) if high - low > 1e-12 * max(1.0, abs(high)) else 0.05 * max(abs(high), 1.0)
    low, high = low - pad, high + pad

    def x(i: int) -> float:
        return LEFT + (i + 0.5) * plot_w / n

    def y(v: float) -> float:
        return TOP + (high - v) / (high - low) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img">']
    for k in range(3):
        v = low + k * (high - low) / 2
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>')
        out.append(f'<text x="{LEFT - 4}" y="{y(v) + 3:.1f}" text-anchor="end">{html.escape(cell(v))}</text>')
    out.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}"/>')
    out.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>')
    every = -(-n // MAX_LABELS)
    for i, label in enumerate(labels):
        bottom = TOP + plot_h
        out.append(f'<line class="axis" x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{bottom}" y2="{bottom + 3}"/>')
        if i % every == 0:
            out.append(
                f'<text x="{x(i):.1f}" y="{bottom + 12}" text-anchor="end" '
                f'transform="rotate(-35 {x(i):.1f} {bottom + 12})">{html.escape(label)}</text>'
            )
    for i, j, verdict, title in steps:
        a, b = points[i]["mean"], points[j]["mean"]
        out.append(
            f'<line class="step {verdict}" x1="{x(i):.1f}" y1="{y(a):.1f}" x2="{x(j):.1f}" y2="{y(b):.1f}">'
            f"<title>{html.escape(title)}</title></line>"
        )
        if verdict.split()[0] not in (UNCHANGED, "unjudged"):
            out.append(
                f'<circle class="mark {verdict}" cx="{(x(i) + x(j)) / 2:.1f}" cy="{(y(a) + y(b)) / 2:.1f}" r="5">'
                f"<title>{html.escape(title)}</title></circle>"
            )
    for i, p in points.items():
        if p["sd"]:
            top, bottom = y(p["mean"] + p["sd"]), y(p["mean"] - p["sd"])
            out.append(f'<line class="bar" x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top:.1f}" y2="{bottom:.1f}"/>')
        sd = "" if p["sd"] is None else f" ± {cell(p['sd'])} (sd)"
        title = f"{labels[i]} {utc_time(p['started'])}: {cell(p['mean'])}{sd}, {p['n']} seed(s)"
        out.append(
            f'<circle class="point" cx="{x(i):.1f}" cy="{y(p["mean"]):.1f}" r="3"><title>{html.escape(title)}</title>'
            "</circle>"
        )
    out.append("</svg>")
    return "".join(out)


def history_page(runs: list[Run], metrics: list[str]) -> str:
    """The page of these runs (in history's order, ``history.ordered_runs``) for these metrics."""
    fields = [run_fields(run.manifest) for run in runs]
    labels = [_label(f) for f in fields]
    verdicts = _Verdicts(runs)
    sections: defaultdict[tuple, list[str]] = defaultdict(list)
    changes = []
    for number, (key, points) in enumerate(_series(runs, metrics).items(), start=1):
        dataset_id, framework, role, metric = key
        first = next(iter(points.values()))
        name = f"{first['dataset']} ({dataset_id}) · {framework} · {role} · {metric}"
        steps = []
        indices = sorted(points)
        for i, j in itertools.pairwise(indices):
            row = verdicts.row(i, j, key)
            if row is None:
                steps.append((i, j, "unjudged", f"{labels[i]} → {labels[j]}: not judged by compare"))
                continue
            verdict = row.verdict + (" advisory" if row.advisory else "")
            change = "lost" if row.change is None else cell(row.change)
            title = (
                f"{labels[i]} → {labels[j]}: {verdict} "
                f"(compare: change {change}, margin {cell(row.threshold)}, {row.basis})"
            )
            steps.append((i, j, verdict, title))
            if row.verdict != UNCHANGED:
                changes.append(
                    f'<li class="{row.verdict}"><a href="#plot-{number}">{html.escape(name)}</a>: '
                    f"{html.escape(title)}</li>"
                )
        sections[(first["dataset"], dataset_id)].append(
            f'<figure class="plot" id="plot-{number}">{_svg(points, steps, labels)}'
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
        )

    runs_table = Table(
        "runs",
        ["#", "commit", "started", "suite", "machine", "run id"],
        [
            [i + 1, _label(f), utc_time(f["started"]), f["suite"], f["machine"], f["run_id"]]
            for i, f in enumerate(fields)
        ],
    )
    body = [
        "<h1>distillbench history</h1>",
        f"<p>{len(runs)} runs, ordered by start time; x: the run, labelled with its commit (* = dirty). Each "
        "plot is one (dataset, framework, role, metric): the mean over the run's ok seeds, the bar its sd. "
        "A step between two consecutive points is judged as <code>distillbench compare</code> judges "
        "those two runs (default thresholds): "
        '<span class="improved">improved</span> or <span class="regressed">regressed</span> is marked '
        "(dashed: timing on different machines, advisory); a grey line is unchanged, a dotted one is "
        "not judged (a metric compare does not judge).</p>",
        html_table(runs_table),
        "<h2>Changes</h2>",
        f"<ul>{''.join(changes)}</ul>" if changes else "<p>No step between consecutive runs is a change.</p>",
        *(f"<p>{html.escape(note)}</p>" for note in verdicts.notes),
        "<ul>"
        + "".join(
            f'<li><a href="#dataset-{n}">{html.escape(f"{name} ({dataset_id})")}</a></li>'
            for n, (name, dataset_id) in enumerate(sections, start=1)
        )
        + "</ul>",
    ]
    for n, ((name, dataset_id), figures) in enumerate(sections.items(), start=1):
        body.append(f'<h2 id="dataset-{n}">{html.escape(f"{name} ({dataset_id})")}</h2>')
        body.append(f'<div class="plots">{"".join(figures)}</div>')
    return html_page("distillbench history", "\n".join(body), CSS)
