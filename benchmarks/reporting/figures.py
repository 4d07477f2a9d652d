"""The figures of a report, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each ``*_figure`` function takes the report's summary entries (see ``aggregate.summarize``) and returns
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

from distillbench.benchmarks.reporting.stats import cliques
from distillbench.implementations.roles import FORMATS, ROLE_COLOURS, ROLES

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
    handles = [Line2D([], [], color=ROLE_COLOURS[r], marker="o", ls="") for r in roles]
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
                    ax.errorbar(
                        i + 0.2 * (j - 1),
                        estimate.mean,
                        yerr=_half(estimate),
                        fmt="o",
                        capsize=3,
                        color=ROLE_COLOURS[role],
                    )
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
        points = [
            e
            for e in entries
            if e["framework"] == framework
            and e["speedup"].mean is not None
            and e["retention"]["student_kd"].mean is not None
        ]
        if not points:
            continue
        ax.errorbar(
            [e["speedup"].mean for e in points],
            [e["retention"]["student_kd"].mean for e in points],
            yerr=[_half(e["retention"]["student_kd"]) for e in points],
            fmt=marker,
            capsize=3,
            label=framework,
        )
        for e in points:
            ax.annotate(
                e["label"],
                (e["speedup"].mean, e["retention"]["student_kd"].mean),
                xytext=(4, 3),
                textcoords="offset points",
                fontsize=7,
                parse_math=False,
            )
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
    for ax, key, what in zip(
        axes, ("train_seconds", "latency_p50_us"), ("training time (s)", "p50 latency (us, batch 1)")
    ):
        values = []
        for (other, ref), marker in zip(pairs, MARKERS):
            for (dataset_id, framework), entry in by_key.items():
                partner = by_key.get((dataset_id, ref))
                if framework != other or partner is None:
                    continue
                for role in ROLES:
                    x, y = partner[key][role], entry[key][role]
                    if x and y:
                        ax.plot(x, y, marker, color=ROLE_COLOURS[role], alpha=0.8)
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
            box = ax.boxplot(
                [r["latency_p50_us"] for r in rs],
                positions=[x],
                widths=0.6,
                patch_artist=True,
                medianprops={"color": "black"},
                flierprops={"marker": "."},
            )
            box["boxes"][0].set(facecolor=ROLE_COLOURS[role], alpha=0.5)
            p99 = [r["latency_p99_us"] for r in rs if r.get("latency_p99_us")]
            ax.plot([x] * len(p99), p99, "x", color=ROLE_COLOURS[role], alpha=0.6)
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
        ax.text(
            x_end + (-0.05 if left else 0.05),
            y,
            f"{names[order[pos]]} ({rank:.2f})",
            ha="right" if left else "left",
            va="center",
            parse_math=False,
        )
    return fig


# ---------------------------------------------------------------- sweeps

FRAMEWORK_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points (cost, quality) no other point beats: one with a cost as low or lower
    and a quality as good or better, one of them strictly. Ordered by cost."""
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if sign * points[i][1] > best:
            front.append(i)
            best = sign * points[i][1]
    return front


def _panels(n: int, width: float = 3.8, height: float = 3.0):
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows + 0.5), layout="constrained")
    return fig, list(fig.subplots(nrows, ncols, squeeze=False).flat)


def pareto_figure(points: list[dict], frameworks: list[str], xlabel: str) -> Figure:
    """Quality of the distilled student (filled; the scratch student of the same configuration
    hollow) against the student's size, one panel per dataset, one colour per framework; each
    framework's Pareto front over the distilled students is the line. ``points``: dataset_id, label,
    metric, higher_is_better, framework, number (of the configuration), x, kd, kd_half, scratch."""
    datasets = list(dict.fromkeys((p["dataset_id"], p["label"], p["metric"], p["higher_is_better"]) for p in points))
    fig, axes = _panels(len(datasets))
    for (dataset_id, label, metric, higher), ax in zip(datasets, axes):
        mine = [p for p in points if p["dataset_id"] == dataset_id]
        for framework, color, marker in zip(frameworks, FRAMEWORK_COLORS, MARKERS):
            ps = [p for p in mine if p["framework"] == framework and p["kd"] is not None]
            if not ps:
                continue
            ax.errorbar(
                [p["x"] for p in ps],
                [p["kd"] for p in ps],
                yerr=[p["kd_half"] or 0.0 for p in ps],
                fmt=marker,
                color=color,
                capsize=2,
                ms=5,
                label=f"{framework} distilled",
            )
            scratch = [p for p in ps if p["scratch"] is not None]
            ax.plot(
                [p["x"] for p in scratch],
                [p["scratch"] for p in scratch],
                marker,
                mfc="none",
                color=color,
                alpha=0.6,
                ms=5,
                label=f"{framework} scratch",
            )
            front = [ps[i] for i in pareto_front([(p["x"], p["kd"]) for p in ps], higher)]
            ax.step(
                [p["x"] for p in front],
                [p["kd"] for p in front],
                where="post",
                color=color,
                lw=1.2,
                label=f"{framework} Pareto front",
            )
            ax.plot([p["x"] for p in front], [p["kd"] for p in front], "o", ms=10, mfc="none", mec=color, mew=1.2)
            at: dict[tuple, list[str]] = {}  # configurations at the same point share one label ("1,2")
            for p in ps:
                at.setdefault((p["x"], p["kd"]), []).append(str(p["number"]))
            for (x, y), numbers in at.items():
                ax.annotate(",".join(numbers), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
        xs = [p["x"] for p in mine if p["x"]]
        if xs and max(xs) >= 10 * min(xs):  # sizes spanning a decade or more: log scale
            _log(ax, "x", xs)
        _quality_panel(ax, label, xlabel, metric, higher)
    for ax in axes[len(datasets) :]:
        ax.set_axis_off()
    return fig


def _quality_panel(ax, label: str, xlabel: str, metric: str, higher: bool) -> None:
    """Title, axis labels (the metric with its direction) and legend of one dataset's panel."""
    ax.set_title(label, parse_math=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} ({'higher' if higher else 'lower'} is better)")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.legend(fontsize=6)


def scaling_figure(fits: list[dict], frameworks: list[str]) -> Figure:
    """Training time against training rows on log-log axes, one panel per dataset, one line per
    framework (line style) and role (colour): the points and the least-squares line of log(time)
    on log(rows), its slope in the legend. ``fits``: dataset_id, label, framework, role, rows,
    seconds, slope, intercept."""
    datasets = list(dict.fromkeys((f["dataset_id"], f["label"]) for f in fits))
    styles = dict(zip(frameworks, ("-", "--", ":", "-.")))
    fig, axes = _panels(len(datasets), 4.2, 3.2)
    for (dataset_id, label), ax in zip(datasets, axes):
        xs, ys = [], []
        for f in (f for f in fits if f["dataset_id"] == dataset_id):
            color = ROLE_COLOURS.get(f["role"], "#777777")
            ax.plot(
                f["rows"],
                f["seconds"],
                MARKERS[frameworks.index(f["framework"]) % len(MARKERS)],
                color=color,
                alpha=0.7,
                ms=4,
            )
            if f["slope"] is not None:
                lo, hi = min(f["rows"]), max(f["rows"])
                ax.plot(
                    [lo, hi],
                    [math.exp(f["intercept"]) * lo ** f["slope"], math.exp(f["intercept"]) * hi ** f["slope"]],
                    styles.get(f["framework"], "-"),
                    color=color,
                    lw=1.2,
                    label=f"{f['framework']} {f['role']}: slope {f['slope']:.2f}",
                )
            xs += f["rows"]
            ys += f["seconds"]
        _log(ax, "x", xs)
        _log(ax, "y", ys)
        ax.set_title(label, parse_math=False)
        ax.set_xlabel("training rows")
        ax.set_ylabel("training time (s)")
        ax.legend(fontsize=6)
    for ax in axes[len(datasets) :]:
        ax.set_axis_off()
    return fig


def _bytes_label(value: float, _=None) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def deployment_figure(entries: list[dict], frameworks: list[str], formats: list[str]) -> Figure:
    """Deployment formats: per framework, p50 latency at batch 1 and size in bytes (log x) vs quality
    as % of the float32 teacher's (the teacher in float32 sits at 100), one point per dataset, model
    and format (colour: model role; marker: format), a line joining one model's formats."""
    fig = Figure(figsize=(8, 1.0 + 2.8 * len(frameworks)), layout="constrained")
    axes = fig.subplots(len(frameworks), 2, squeeze=False)
    for i, framework in enumerate(frameworks):
        es = [e for e in entries if e["framework"] == framework]
        for j, (key, label) in enumerate(
            (("latency_p50_us", "p50 latency per row, batch 1 (us)"), ("bytes", "model size (bytes)"))
        ):
            ax = axes[i][j]
            groups: dict[tuple, list[tuple]] = {}
            for e in es:
                # The float32 teacher's retention is 100 by definition (its record has none).
                y = 100.0 if e["role"] == "teacher" and e["format"] == "float32" else e["retention"].mean
                if y is None or not e[key]:
                    continue
                groups.setdefault((e["dataset_id"], e["role"]), []).append(
                    (formats.index(e["format"]) if e["format"] in formats else len(formats), e[key], y, e["format"])
                )
            for (_, role), points in groups.items():
                points.sort()
                color = ROLE_COLOURS.get(role, "#999999")
                ax.plot([p[1] for p in points], [p[2] for p in points], "-", color=color, alpha=0.3, lw=0.8)
                for _, x, y, fmt in points:
                    ax.plot(x, y, FORMATS.get(fmt, "x"), color=color, alpha=0.8, ms=5)
            _log(ax, "x", [e[key] for e in es])
            if key == "bytes":
                ax.xaxis.set_major_formatter(FuncFormatter(_bytes_label))
            ax.set_xlabel(label)
            if j == 0:
                ax.set_ylabel(f"{framework}\n% of float32 teacher quality")
    handles = [Line2D([], [], color=ROLE_COLOURS[r], marker="o", ls="") for r in ROLES] + [
        Line2D([], [], color="black", marker=FORMATS.get(f, "x"), ls="") for f in formats
    ]
    fig.legend(handles, [*ROLES, *formats], loc="outside upper center", ncol=len(ROLES) + len(formats), frameon=False)
    return fig


# ---------------------------------------------------------------- transfer sets

SERIES_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def transfer_size_figure(points: list[dict], frameworks: list[str]) -> Figure:
    """The distilled student's quality against the size of its transfer set (a multiple of the
    training rows, 0 = none, on a scale linear below 1 and logarithmic above), one panel per dataset,
    one line per series of configurations (colour; marker: framework), between each framework's
    scratch student (dotted) and teacher (dashed). ``points``: dataset_id, label, metric,
    higher_is_better, framework, series, size, kd, kd_half, teacher, scratch."""
    datasets = list(dict.fromkeys((p["dataset_id"], p["label"], p["metric"], p["higher_is_better"]) for p in points))
    colours = dict(zip(dict.fromkeys(p["series"] for p in points), SERIES_COLORS * 8))
    fig, axes = _panels(len(datasets))
    for (dataset_id, label, metric, higher), ax in zip(datasets, axes):
        mine = [p for p in points if p["dataset_id"] == dataset_id]
        for framework, colour, marker in zip(frameworks, FRAMEWORK_COLORS, MARKERS):
            ps = [p for p in mine if p["framework"] == framework]
            for role, style in (("teacher", "--"), ("scratch", ":")):
                values = [p[role] for p in ps if p[role] is not None]
                if values:
                    ax.axhline(sum(values) / len(values), color=colour, ls=style, lw=1, label=f"{framework} {role}")
            for series in dict.fromkeys(p["series"] for p in ps):
                line = sorted((p for p in ps if p["series"] == series), key=lambda p: p["size"])
                ax.errorbar(
                    [p["size"] for p in line],
                    [p["kd"] for p in line],
                    yerr=[p["kd_half"] or 0.0 for p in line],
                    fmt=f"-{marker}",
                    color=colours[series],
                    capsize=2,
                    ms=4,
                    label=series,
                )
        sizes = sorted({p["size"] for p in mine})
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xticks(sizes, [f"{s:g}x" for s in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        _quality_panel(ax, label, "transfer set (times the training rows)", metric, higher)
    for ax in axes[len(datasets) :]:
        ax.set_axis_off()
    return fig
