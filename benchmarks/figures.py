"""The figures of a report, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each ``*_figure`` function takes the report's summary entries (see ``report.summarize``) and returns
a matplotlib Figure; ``render`` draws one as PNG and SVG bytes. Text from datasets is drawn as
plain text (``parse_math=False``: a ``$`` in a name is not mathtext).
"""

from __future__ import annotations

import io
import math

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from distillbench.benchmarks.stats import cliques
from distillbench.implementations.pipeline import ROLES

ROLE_COLORS = {"teacher": "#555555", "student_kd": "#1f77b4", "student_scratch": "#ff7f0e"}
MARKERS = "osD^v"
STYLE = {"svg.hashsalt": "distillbench", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3}


def render(build, *args) -> tuple[bytes, bytes]:
    """PNG and SVG bytes of ``build(*args)`` (deterministic: no dates, fixed SVG ids)."""
    with matplotlib.rc_context(STYLE):
        fig = build(*args)
        FigureCanvasAgg(fig)
        png, svg = io.BytesIO(), io.BytesIO()
        fig.savefig(png, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
        fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
    return png.getvalue(), svg.getvalue()


def _log(ax, which: str, values) -> None:
    """Log scale on axes ``which`` ("x", "y" or "xy") with plain tick labels: at 1, 2 and 5 times the
    powers of ten, or at every integer multiple when ``values`` span less than a decade."""
    values = [v for v in values if v and v > 0]
    subs = (1.0, 2.0, 5.0) if not values or max(values) >= 10 * min(values) else tuple(range(1, 10))
    for name in which:
        getattr(ax, f"set_{name}scale")("log")
        axis = getattr(ax, f"{name}axis")
        axis.set_major_locator(LogLocator(subs=subs))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(NullFormatter())


def _half(estimate) -> float:
    return estimate.half or 0.0


def _role_legend(fig: Figure, roles=ROLES) -> None:
    handles = [Line2D([], [], color=ROLE_COLORS[r], marker="o", ls="") for r in roles]
    fig.legend(handles, roles, loc="upper center", ncol=len(roles), frameon=False, bbox_to_anchor=(0.5, 1.0))


def quality_figure(entries: list[dict], frameworks: list[str]) -> Figure:
    """(1) Per dataset: teacher, distilled and scratch quality, mean and 95% CI, per framework."""
    datasets = list(dict.fromkeys((e["dataset_id"], e["label"], e["metric"], e["higher_is_better"]) for e in entries))
    by_key = {(e["dataset_id"], e["framework"]): e for e in entries}
    ncols = min(3, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    fig = Figure(figsize=(3.4 * ncols, 2.5 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).flat
    # datasets first: zip stops on it without taking one more axis, so the loop below hides every unused one
    for (dataset_id, label, metric, higher), ax in zip(datasets, axes):
        for i, framework in enumerate(frameworks):
            entry = by_key.get((dataset_id, framework))
            for j, role in enumerate(ROLES):
                estimate = entry["quality"][role] if entry else None
                if estimate and estimate.mean is not None:
                    ax.errorbar(i + 0.2 * (j - 1), estimate.mean, yerr=_half(estimate), fmt="o", capsize=3,
                                color=ROLE_COLORS[role])
        ax.set_xticks(range(len(frameworks)), frameworks)
        ax.set_xlim(-0.6, len(frameworks) - 0.4)
        ax.set_title(label, parse_math=False)
        ax.set_ylabel(f"{metric} ({'higher' if higher else 'lower'} is better)")
    for ax in axes:
        ax.set_axis_off()
    fig.get_layout_engine().set(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    _role_legend(fig)
    return fig


def retention_speedup_figure(entries: list[dict], frameworks: list[str]) -> Figure:
    """(2) Retention of the distilled student vs its inference speed-up, per dataset and framework."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for framework, marker in zip(frameworks, MARKERS):
        points = [e for e in entries if e["framework"] == framework
                  and e["speedup"].mean is not None and e["retention"]["student_kd"].mean is not None]
        if not points:
            continue
        ax.errorbar([e["speedup"].mean for e in points], [e["retention"]["student_kd"].mean for e in points],
                    yerr=[_half(e["retention"]["student_kd"]) for e in points], fmt=marker, capsize=3, label=framework)
        for e in points:
            ax.annotate(e["label"], (e["speedup"].mean, e["retention"]["student_kd"].mean), xytext=(4, 3),
                        textcoords="offset points", fontsize=7, parse_math=False)
    ax.axhline(100, color="grey", ls="--", lw=1)
    ax.axvline(1, color="grey", ls=":", lw=1)
    _log(ax, "x", [1.0] + [e["speedup"].mean for e in entries if e["speedup"].mean])
    ax.set_xlabel("inference speed-up of the distilled student (teacher p50 / student p50 latency, batch 1)")
    ax.set_ylabel("retention % (distilled student vs teacher)")
    ax.legend()
    return fig


def framework_time_figure(entries: list[dict], pairs: list[tuple[str, str]]) -> Figure:
    """(3) One framework against the other: training time and p50 latency per dataset and role, with y = x."""
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    by_key = {(e["dataset_id"], e["framework"]): e for e in entries}
    for ax, key, what in zip(axes, ("train_seconds", "latency_p50_us"), ("training time (s)", "p50 latency (us, batch 1)")):
        values = []
        for (other, ref), marker in zip(pairs, MARKERS):
            for (dataset_id, framework), entry in by_key.items():
                partner = by_key.get((dataset_id, ref))
                if framework != other or partner is None:
                    continue
                for role in ROLES:
                    x, y = partner[key][role], entry[key][role]
                    if x and y:
                        ax.plot(x, y, marker, color=ROLE_COLORS[role], alpha=0.8)
                        values += [x, y]
        if values:
            lo, hi = min(values) / 1.5, max(values) * 1.5
            ax.plot([lo, hi], [lo, hi], color="grey", ls="--", lw=1)
            _log(ax, "xy", values)
            ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal")
        ax.set_xlabel(f"{pairs[0][1]}: {what}")
        ax.set_ylabel(f"{pairs[0][0]}: {what}")
        ax.set_title(f"above the line: {pairs[0][1]} faster")
    fig.get_layout_engine().set(rect=(0, 0, 1, 0.92))
    _role_legend(fig)
    return fig


def latency_figure(records: list[dict], frameworks: list[str]) -> Figure:
    """(4) Distribution of p50 latency (boxes) and p99 latency (crosses) over datasets and seeds, per
    role and framework."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ticks = []
    for i, framework in enumerate(frameworks):
        for j, role in enumerate(ROLES):
            rs = [r for r in records if r["framework"] == framework and r["role"] == role and r.get("latency_p50_us")]
            x = i * (len(ROLES) + 1) + j
            ticks.append((x, f"{framework}\n{role}"))
            if not rs:
                continue
            box = ax.boxplot([r["latency_p50_us"] for r in rs], positions=[x], widths=0.6, patch_artist=True,
                             medianprops={"color": "black"}, flierprops={"marker": "."})
            box["boxes"][0].set(facecolor=ROLE_COLORS[role], alpha=0.5)
            p99 = [r["latency_p99_us"] for r in rs if r.get("latency_p99_us")]
            ax.plot([x] * len(p99), p99, "x", color=ROLE_COLORS[role], alpha=0.6)
    ax.set_xticks([t[0] for t in ticks], [t[1] for t in ticks], fontsize=7)
    _log(ax, "y", [r.get(k) for r in records for k in ("latency_p50_us", "latency_p99_us")])
    ax.set_ylabel("latency per row, batch 1 (us)")
    ax.set_title("p50 latency over datasets and seeds (boxes); p99 (crosses)", fontsize=9)
    return fig


def cd_figure(names: list[str], mean_ranks: list[float], cd: float) -> Figure:
    """(5) Critical-difference diagram (Demsar 2006): mean ranks on an axis (1 = best, on the left),
    the Nemenyi critical difference, and bars joining methods not significantly different."""
    k = len(names)
    order = sorted(range(k), key=lambda i: mean_ranks[i])
    ranked = [mean_ranks[i] for i in order]
    groups = cliques(ranked, cd)
    half = math.ceil(k / 2)
    top = 0.35 + 0.12 * len(groups)
    fig = Figure(figsize=(7, 1.4 + 0.28 * half + 0.12 * len(groups)), layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_xlim(1, max(k, 2))
    ax.set_ylim(top + 0.3 * half + 0.2, -1.1)
    ax.plot([1, k], [0, 0], color="black", lw=1)
    for tick in range(1, k + 1):
        ax.plot([tick, tick], [0, -0.1], color="black", lw=1)
        ax.text(tick, -0.17, str(tick), ha="center", va="bottom")
    ax.plot([1, 1 + cd], [-0.75, -0.75], color="black", lw=1.5)
    ax.text(1 + cd / 2, -0.8, f"CD = {cd:.2f}", ha="center", va="bottom")
    for n, (i, j) in enumerate(groups):
        y = 0.2 + 0.12 * n
        ax.plot([ranked[i] - 0.03, ranked[j] + 0.03], [y, y], color="black", lw=3, solid_capstyle="butt")
    for pos in range(k):  # best half labelled on the left, the rest on the right, lines never crossing
        left = pos < half
        y = top + 0.3 * (pos if left else k - 1 - pos)
        x_end = 0.85 if left else k + 0.15
        rank = ranked[pos]
        ax.plot([rank, rank, x_end], [0, y, y], color="black", lw=0.8)
        ax.text(x_end + (-0.05 if left else 0.05), y, f"{names[order[pos]]} ({rank:.2f})",
                ha="right" if left else "left", va="center", parse_math=False)
    return fig
