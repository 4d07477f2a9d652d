"""The report of a run: ``report.md`` (GitHub-flavoured Markdown), ``report.html`` (one self-contained
file: inline CSS, figures as base64 PNG), ``figures/*.png|svg`` and ``tables/*.csv|tex``.

The report is built once as a list of blocks (headings, paragraphs, tables, figures) and rendered to
Markdown and HTML from that list. Every string is escaped for the format it lands in: dataset names,
notes and error messages are user-uploaded text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distillbench.benchmarks.reporting import figures
from distillbench.benchmarks.reporting.aggregate import (
    CORRECTED_CI,
    across_rows,
    cross_validated,
    dataset_labels,
    framework_rows,
    machine_kinds,
    rank_methods,
    run_order,
    summarize,
)
from distillbench.benchmarks.reporting.blocks import Figure, Table, entry_cells, entry_columns, make_figure
from distillbench.benchmarks.reporting.convergence import convergence_blocks, sanity_blocks
from distillbench.benchmarks.reporting.deployment import deployment_blocks
from distillbench.benchmarks.reporting.payoff import payoff_blocks
from distillbench.benchmarks.reporting.render import table_csv, table_tex, to_html, to_markdown
from distillbench.benchmarks.reporting.sections import datasets_table, failed_table, run_table
from distillbench.benchmarks.reporting.sweep import sweep_blocks, sweep_variants
from distillbench.benchmarks.store.record import is_ok
from distillbench.benchmarks.store.run_folder import MANIFEST, Run, read_run
from distillbench.files import write_atomic
from distillbench.implementations.roles import REFERENCE, REFERENCES, ROLES, STUDENTS
from distillbench.validate import folder_name

MIN_CD_DATASETS = 5


@dataclass
class ReportData:
    """What the sections read, computed once from the run. A sweep: the sections before "Sweep" show
    its first configuration (``records``), the Sweep section all of them (``all_records``)."""

    manifest: dict
    all_records: list[dict]
    variants: list[dict]
    records: list[dict]
    entries: list[dict]  # aggregate.summarize: per dataset and framework
    frameworks: list[str]  # those with results, in the run's order
    labels: dict[int, str]
    mixed: bool  # the records ran on more than one kind of machine (then timings are not compared)
    machines: str | None  # what the run table says about the machines, if anything


@dataclass(frozen=True)
class Section:
    name: str
    build: Callable[[ReportData], list]  # the section's blocks; none where it does not apply
    tables: tuple[str, ...]  # the names of the tables and figures it may make, and no others
    figures: tuple[str, ...]


SECTIONS: dict[str, Section] = {}  # in the report's order


def section(*, tables: tuple[str, ...] = (), figures: tuple[str, ...] = ()):
    """Function decorator: the next section of the report (sections are defined below in the
    report's order), making at most these tables and figures (files under tables/ and figures/)."""

    def register(build: Callable[[ReportData], list]) -> Callable[[ReportData], list]:
        if build.__name__ in SECTIONS:
            raise ValueError(f"report section {build.__name__!r} is registered twice")
        SECTIONS[build.__name__] = Section(build.__name__, build, tables, figures)
        return build

    return register


def report_data(run: Run) -> ReportData:
    manifest, all_records = run.manifest, run.records
    variants = sweep_variants(all_records, manifest)
    # A sweep: the sections before "Sweep" show its first configuration (and the references, fitted
    # once per dataset and seed), the Sweep section all of them.
    records = [r for r in all_records if r.get("variant") == variants[0]["label"] or r["framework"] == REFERENCE]
    entries = summarize(records, manifest)
    _, frameworks = run_order(records, manifest)
    frameworks = [f for f in frameworks if any(e["framework"] == f for e in entries)]
    mixed, machines = machine_kinds(records, manifest)
    return ReportData(
        manifest,
        all_records,
        variants,
        records,
        entries,
        frameworks,
        dataset_labels(records, manifest),
        mixed,
        machines,
    )


@section(tables=("run",))
def run_info(data: ReportData) -> list:
    return [("h2", "Run"), run_table(data.manifest), *([("p", data.machines)] if data.machines else [])]


@section(tables=("datasets",))
def datasets(data: ReportData) -> list:
    blocks: list = [("h2", "Datasets"), datasets_table(data.manifest)]
    if data.variants[0]["label"] is not None:
        blocks.append(
            (
                "p",
                f"This run is a sweep of {len(data.variants)} configurations per job. The sections up to "
                f"Sweep show its first configuration ({data.variants[0]['label']}); the Sweep section "
                "compares them all.",
            )
        )
    return blocks


def _corrected(data: ReportData) -> list:
    """The note beside a table of intervals over folds: they are corrected (``aggregate.CORRECTED_CI``)."""
    return [("p", CORRECTED_CI)] if cross_validated(data.manifest) else []


@section(tables=("results",), figures=("quality", "retention_speedup"))
def results(data: ReportData) -> list:
    entries, frameworks = data.entries, data.frameworks
    blocks: list = [
        ("h2", "Results per dataset and framework"),
        (
            "p",
            "Quality is the primary metric on the test split (accuracy for classification, RMSE in the target's "
            "units for regression), mean ± half-width of the 95% Student-t confidence interval over seeds ('-' "
            "with a single seed). Retention: student quality as % of the teacher's (100 = equal, above = "
            "better). KD gain: % improvement of the distilled over the scratch student (positive = distillation "
            "helped). Latency: median over seeds of the p50 at batch 1. Speed-up: teacher p50 / distilled "
            "student p50. Seeds: ok / run. linear and hgb: the reference models of the dataset (the same for "
            "every framework; see Sanity checks); kd vs best reference: the distilled student's quality as % of "
            "the better reference's on each split. In brackets beside a number: its models' flags over the seeds "
            "(budget: ended on the training budget, see Convergence; below linear, far below hgb, diverged: see "
            "Sanity checks).",
        ),
        *_corrected(data),
    ]
    if entries:
        blocks.append(
            Table(
                "results",
                [
                    *entry_columns(False),
                    *ROLES,
                    *REFERENCES,
                    "retention % (kd)",
                    "retention % (scratch)",
                    "kd vs best reference %",
                    "KD gain %",
                    "teacher params",
                    "student params",
                    "teacher p50 us",
                    "student p50 us",
                    "speed-up",
                    "seeds",
                ],
                [
                    [
                        *entry_cells(e, False),
                        *(e["quality"][r] for r in ROLES + REFERENCES),
                        *(e["retention"][r] for r in STUDENTS),
                        e["retention_best_reference"],
                        e["kd_gain"],
                        e["n_params"]["teacher"],
                        e["n_params"]["student_kd"],
                        e["latency_p50_us"]["teacher"],
                        e["latency_p50_us"]["student_kd"],
                        e["speedup"],
                        e["seeds"],
                    ]
                    for e in entries
                ],
            )
        )
        blocks += [
            make_figure(
                "quality",
                figures.quality_figure,
                entries,
                frameworks,
                caption="Test quality per dataset of the teacher, the distilled and the scratch student, "
                "mean and 95% CI over seeds",
            ),
            make_figure(
                "retention_speedup",
                figures.retention_speedup_figure,
                entries,
                frameworks,
                caption="Retention of the distilled student vs its inference speed-up over the teacher, "
                "one point per dataset and framework (95% CI over seeds)",
            ),
        ]
    else:
        blocks.append(("p", "No job finished: there are no results (see Failed jobs)."))
    return blocks


@section(tables=("convergence", "budget_bound", "sanity"))
def convergence(data: ReportData) -> list:
    return convergence_blocks(data.records, data.labels) + sanity_blocks(data.records, data.labels)


@section(tables=("frameworks",), figures=("framework_time",))
def frameworks_compared(data: ReportData) -> list:
    entries, frameworks, mixed = data.entries, data.frameworks, data.mixed
    reference, others = (frameworks[0], frameworks[1:]) if frameworks else ("", [])
    pairs = [(other, reference) for other in others]
    blocks: list = [("h2", " vs ".join(reversed(frameworks[:2])) if len(frameworks) > 1 else "Frameworks compared")]
    if pairs:
        blocks += [
            (
                "p",
                "Quality difference: mean over seeds of the paired difference (same seed = same split "
                "and initial weights), with its 95% CI; 'agree' says whether the CI includes 0. Ratios "
                f"are means over seeds of the first framework over {reference}'s (above 1: slower training, "
                "slower inference, higher throughput).",
            ),
            *_corrected(data),
            Table(
                "frameworks",
                [
                    "dataset",
                    "frameworks",
                    "role",
                    "metric",
                    "quality difference",
                    "agree",
                    "training time ratio",
                    "p50 latency ratio",
                    "throughput ratio",
                ],
                framework_rows(entries, pairs),
            ),
            *(
                []
                if mixed
                else [
                    make_figure(
                        "framework_time",
                        figures.framework_time_figure,
                        entries,
                        pairs,
                        caption=f"{pairs[0][0]} vs {reference}: training time and p50 latency "
                        "per dataset and role (mean over seeds), with the line y = x",
                    )
                ]
            ),
        ]
    else:
        blocks.append(("p", f"Needs results from two frameworks; this run has {', '.join(frameworks) or 'none'}."))
    return blocks


@section(tables=("across_datasets", "ranks"), figures=("critical_difference",))
def across_datasets(data: ReportData) -> list:
    entries, frameworks = data.entries, data.frameworks
    blocks: list = [
        ("h2", "Across datasets"),
        (
            "p",
            "Per framework, over datasets: medians of the per-dataset means; win/tie/loss of the distilled vs the "
            "scratch student on the mean KD gain; two-sided Wilcoxon signed-rank test of the KD gains against 0 "
            "('-' when no dataset differs).",
        ),
    ]
    if entries:
        blocks.append(
            Table(
                "across_datasets",
                [
                    "framework",
                    "datasets",
                    "median retention % (kd)",
                    "median retention % (scratch)",
                    "median KD gain %",
                    "kd vs scratch win/tie/loss",
                    "Wilcoxon W",
                    "Wilcoxon p",
                ],
                across_rows(entries, frameworks),
            )
        )
        ranking = rank_methods(entries, frameworks)
        n, (chi2, p), cd = len(ranking["datasets"]), ranking["friedman"], ranking["cd"]
        blocks += [
            (
                "p",
                f"Mean ranks (1 = best) of each framework and role over the {n} datasets where all have a "
                f"result. Friedman test: "
                + ("-" if chi2 is None else f"chi2 = {chi2:.4g}, p = {p:.3g}")
                + "; Nemenyi critical difference (alpha 0.05): "
                + ("-" if cd is None else f"{cd:.3g}")
                + ".",
            ),
            Table("ranks", ["method", "mean rank"], [list(x) for x in zip(ranking["names"], ranking["mean_ranks"])]),
        ]
        if n >= MIN_CD_DATASETS and cd is not None:
            blocks.append(
                make_figure(
                    "critical_difference",
                    figures.cd_figure,
                    ranking["names"],
                    ranking["mean_ranks"],
                    cd,
                    caption=f"Critical-difference diagram: mean ranks over {n} datasets; methods joined "
                    f"by a bar are not significantly different (Nemenyi, alpha 0.05; Friedman "
                    f"p = {'-' if p is None else f'{p:.3g}'})",
                )
            )
        else:
            blocks.append(
                (
                    "p",
                    f"No critical-difference diagram: it needs at least {MIN_CD_DATASETS} datasets with "
                    f"all results; this run has {n}.",
                )
            )
    return blocks


@section(figures=("latency",))
def latency(data: ReportData) -> list:
    if not data.entries:
        return []
    return [
        ("h2", "Latency"),
        ("p", data.machines)
        if data.mixed
        else make_figure(
            "latency",
            figures.latency_figure,
            [r for r in data.records if is_ok(r)],
            data.frameworks,
            caption="Latency at batch 1 per role and framework over datasets and seeds: p50 (boxes) and p99 (crosses)",
        ),
    ]


@section(tables=("deployment", "deployment_summary", "deployment_failed"), figures=("deployment",))
def deployment(data: ReportData) -> list:
    return deployment_blocks(data.records, data.manifest, data.frameworks, data.mixed)


@section(tables=("sweep", "sweep_scaling"), figures=("sweep_pareto_params", "sweep_pareto_bytes", "sweep_scaling"))
def sweep(data: ReportData) -> list:
    if data.variants[0]["label"] is None:
        return []
    frameworks = data.frameworks or run_order(data.all_records, data.manifest)[1]
    return sweep_blocks(data.all_records, data.manifest, data.variants, frameworks)


@section(tables=("payoff", "payoff_ranks"), figures=("payoff_transfer_size",))
def payoff(data: ReportData) -> list:
    frameworks = data.frameworks or run_order(data.all_records, data.manifest)[1]
    return payoff_blocks(data.all_records, data.manifest, data.variants, frameworks)


@section(tables=("failed",))
def failed_jobs(data: ReportData) -> list:
    failed = failed_table(data.all_records, data.manifest, data.labels)
    return [("h2", "Failed jobs"), failed if failed.rows else ("p", "None: every planned job finished ok.")]


def build(run: Run) -> tuple[str, list]:
    """The report's title and blocks: ("h2", text), ("p", text), Table, Figure; section by section."""
    data = report_data(run)
    blocks: list = []
    for s in SECTIONS.values():
        made = s.build(data)
        undeclared = {b.name for b in made if isinstance(b, Table | Figure)} - set(s.tables) - set(s.figures)
        if undeclared:
            raise ValueError(f"report section {s.name!r} makes {sorted(undeclared)}, which it does not declare")
        blocks += made
    return f"distillbench report: {run.manifest['run_id']}", blocks


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the report of ``run_dir`` into ``out`` (default reports/<run_id>/); returns report.html's folder."""
    run = read_run(run_dir, skip_damaged=True)  # a damaged line: a warning, and its job shown as incomplete
    # The manifest is data from outside: its run_id names a folder only when it is a plain name.
    if out is None:
        out = Path("reports") / folder_name(run.manifest.get("run_id"), f"{Path(run_dir) / MANIFEST}: run_id")
    out = Path(out)
    title, blocks = build(run)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for s in SECTIONS.values():  # a figure or table not made this time must not linger from an earlier report
        for name in s.figures:
            for suffix in (".png", ".svg"):
                (out / "figures" / (name + suffix)).unlink(missing_ok=True)
        for name in s.tables:
            for suffix in (".csv", ".tex"):
                (out / "tables" / (name + suffix)).unlink(missing_ok=True)
    for block in blocks:
        if isinstance(block, Figure):
            write_atomic(out / "figures" / f"{block.name}.png", block.png)
            write_atomic(out / "figures" / f"{block.name}.svg", block.svg)
        elif isinstance(block, Table):
            write_atomic(out / "tables" / f"{block.name}.csv", table_csv(block))
            write_atomic(out / "tables" / f"{block.name}.tex", table_tex(block))
    write_atomic(out / "report.md", to_markdown(title, blocks))
    write_atomic(out / "report.html", to_html(title, blocks))
    return out
