"""The "What made distillation pay off" section of a report: per dataset, framework and configuration
the distillation gain and the share of the teacher's lead the distilled student closes, with their
confidence intervals; the distilled student's quality against the size of its transfer set; and the
configurations ranked over datasets with the statistics of the rest of the report."""

from __future__ import annotations

import numpy as np

from distillbench.benchmarks.reporting import figures, stats
from distillbench.benchmarks.reporting.blocks import Table, entry_cells, entry_columns, make_figure
from distillbench.benchmarks.reporting.sweep import sweep_entries
from distillbench.implementations.roles import ROLES
from distillbench.implementations.spec import GENERATORS

NO_GAP = "no gap to close"


def _gap(entry: dict) -> dict:
    """The teacher's lead over the scratch student and the share of it the distilled student closes,
    over the seeds where all three have a result. There is a gap to close where the teacher beats
    the scratch student by more than the seed noise: with two seeds or more, where the 95% interval
    of the paired difference over seeds lies above 0; with one seed, where the difference exceeds the
    test split's own noise, as the record says (``gap_closed`` not null)."""
    by_seed, metric = entry["by_seed"], entry["metric"]
    seeds = sorted(by_seed["teacher"].keys() & by_seed["student_kd"].keys() & by_seed["student_scratch"].keys())
    sign = 1.0 if entry["higher_is_better"] else -1.0
    t, kd, s = (
        [by_seed[role][seed]["metrics"][metric] for seed in seeds]
        for role in ("teacher", "student_kd", "student_scratch")
    )
    gap = stats.mean_ci([sign * (a - b) for a, b in zip(t, s)], test_train=entry.get("test_train"))
    if len(seeds) >= 2:
        present = gap.low is not None and gap.low > 0
    else:
        present = bool(seeds) and by_seed["student_kd"][seeds[0]].get("gap_closed") is not None
    closed = (
        stats.mean_ci(
            [100.0 * (k - b) / (a - b) for a, k, b in zip(t, kd, s) if a != b], test_train=entry.get("test_train")
        )
        if present
        else None
    )
    return {"gap": gap, "present": present, "closed": closed}


def _transfer(entry: dict) -> dict:
    """The distilled student's transfer set: kind, rows, size as a multiple of its labelled rows, and
    the seconds spent making and labelling it (means over seeds)."""
    kd = list(entry["by_seed"]["student_kd"].values())
    kind = next((r["transfer_kind"] for r in kd if r.get("transfer_kind")), "none")
    rows = stats.median([r.get("transfer_rows", 0) for r in kd])
    size = stats.median([r["transfer_rows"] / r["labelled_rows"] for r in kd if r.get("labelled_rows")]) or 0.0
    cost = stats.mean_ci([r.get("transfer_generate_seconds", 0.0) + r.get("transfer_label_seconds", 0.0) for r in kd])
    return {"kind": kind, "rows": rows or 0, "size": size, "seconds": cost.mean or 0.0}


def payoff_entries(records: list[dict], manifest: dict, variants: list[dict]) -> list[dict]:
    """The report's entries per (dataset, framework, configuration) (``sweep_entries``) with their gap
    (``_gap``) and transfer set (``_transfer``)."""
    return [e | {"gap": _gap(e), "transfer": _transfer(e)} for e in sweep_entries(records, manifest, variants)]


def rank_configurations(entries: list[dict], framework: str) -> dict:
    """Ranks (1 = best) of one framework's configurations by the distilled student's quality on each
    dataset where all of them have a result; Friedman test and Nemenyi critical difference."""
    mine = [e for e in entries if e["framework"] == framework]
    numbers = sorted({e["number"] for e in mine})
    by_key = {(e["dataset_id"], e["number"]): e for e in mine}
    scores = []
    for dataset_id in dict.fromkeys(e["dataset_id"] for e in mine):
        row = [by_key.get((dataset_id, n)) for n in numbers]
        if all(e is not None and e["quality"]["student_kd"].mean is not None for e in row):
            scores.append(
                [(1 if e["higher_is_better"] else -1) * e["quality"]["student_kd"].mean for e in row if e is not None]
            )
    if not scores or len(numbers) < 2:
        return {
            "numbers": numbers,
            "datasets": len(scores),
            "mean_ranks": [None] * len(numbers),
            "friedman": (None, None),
            "cd": None,
        }
    scores_array = np.array(scores)
    return {
        "numbers": numbers,
        "datasets": len(scores),
        "mean_ranks": list(stats.ranks(scores_array).mean(axis=0)),
        "friedman": stats.friedman(scores_array),
        "cd": stats.nemenyi_cd(len(numbers), len(scores)),
    }


def _size_points(entries: list[dict]) -> list[dict]:
    """The distilled students of the configurations without a transfer set or with a generated one:
    their quality against the set's size, in series of configurations that differ only by it (named
    by the framework and the other swept values, or else the kind of the set)."""
    points = []
    for e in entries:
        kind = e["transfer"]["kind"]
        if (kind != "none" and kind not in GENERATORS) or e["quality"]["student_kd"].mean is None:
            continue
        others = [
            f"{path.rsplit('.', 1)[-1]}={value}"
            for path, value in (e["params"] or {}).items()
            if path != "transfer.size"
        ]
        points.append(
            {
                "dataset_id": e["dataset_id"],
                "label": e["label"],
                "metric": e["metric"],
                "higher_is_better": e["higher_is_better"],
                "framework": e["framework"],
                "kind": kind,
                "series": ", ".join([e["framework"], *others]),
                "size": e["transfer"]["size"],
                "kd": e["quality"]["student_kd"].mean,
                "kd_half": e["quality"]["student_kd"].half,
                "teacher": e["quality"]["teacher"].mean,
                "scratch": e["quality"]["student_scratch"].mean,
            }
        )
    for series in {p["series"] for p in points if "=" not in p["series"]}:
        kinds = sorted({p["kind"] for p in points if p["series"] == series} - {"none"})
        for p in points:
            if p["series"] == series and kinds:
                p["series"] = f"{series} {'/'.join(kinds)}"
    return points


def payoff_blocks(records: list[dict], manifest: dict, variants: list[dict], frameworks: list[str]) -> list:
    entries = payoff_entries(records, manifest, variants)
    blocks: list = [
        ("h2", "What made distillation pay off"),
        (
            "p",
            "Per dataset, framework and configuration: the KD gain (% better than the scratch student) and the "
            "gap closed: the share of the teacher's lead over the scratch student that the distilled student "
            "closes, 100 (kd - scratch) / (teacher - scratch) per seed (100: all of it; 0: none; negative: "
            "worse than the scratch student), means ± 95% CI over seeds. It is given only where the teacher "
            "beats the scratch student by more than the seed noise: with two seeds or more, where the 95% "
            "interval of the teacher-minus-scratch difference over seeds lies above 0; with one seed, where the "
            "difference exceeds the test split's own noise (1.96 standard errors of the paired per-row "
            "difference); elsewhere there is " + NO_GAP + ". Gap: the teacher's lead in the metric's units "
            "(positive: the teacher is better). Transfer: the distilled student's extra rows without labels "
            "([transfer]), as a multiple of its labelled rows; make + label: seconds spent generating them and "
            "labelling them with the teacher, against the distilled student's training time.",
        ),
    ]
    if not entries:
        return blocks + [("p", "No job finished: there is nothing to compare (see Failed jobs).")]
    several = len(variants) > 1
    blocks.append(
        Table(
            "payoff",
            [
                *entry_columns(several),
                *ROLES,
                "KD gain %",
                "gap",
                "gap closed %",
                "transfer",
                "transfer rows",
                "make + label s",
                "kd train s",
                "scratch train s",
                "seeds",
            ],
            [
                [
                    *entry_cells(e, several),
                    *(e["quality"][r] for r in ROLES),
                    e["kd_gain"],
                    e["gap"]["gap"],
                    e["gap"]["closed"] if e["gap"]["present"] else NO_GAP,
                    "none"
                    if e["transfer"]["kind"] == "none"
                    else f"{e['transfer']['kind']} {e['transfer']['size']:g}x",
                    e["transfer"]["rows"],
                    e["transfer"]["seconds"],
                    e["train_seconds"]["student_kd"],
                    e["train_seconds"]["student_scratch"],
                    e["seeds"],
                ]
                for e in entries
            ],
        )
    )
    gaps = [e for e in entries if e["gap"]["present"]]
    if not gaps:
        blocks.append(
            (
                "p",
                f"On no dataset does the teacher beat the scratch student by more than the seed noise: "
                f"there is {NO_GAP}, and distillation could at best match the scratch student.",
            )
        )

    points = _size_points(entries)
    series = {p["series"] for p in points}
    varied = [s for s in series if len({p["size"] for p in points if p["series"] == s}) > 1]
    if varied:
        blocks.append(
            make_figure(
                "payoff_transfer_size",
                figures.transfer_size_figure,
                [p for p in points if p["series"] in varied],
                frameworks,
                caption="Quality of the distilled student (mean and 95% CI over seeds) against the "
                "size of its transfer set, as a multiple of the training rows (0: none), "
                "between its framework's scratch student (dotted) and teacher (dashed)",
            )
        )
    else:
        blocks.append(
            (
                "p",
                "No figure of quality against transfer-set size: no series of configurations varies "
                "transfer.size alone (e.g. the transfer-sweep preset does).",
            )
        )

    blocks.append(
        (
            "p",
            "Across datasets, per framework and configuration: the number of datasets, the median KD "
            "gain, the datasets with a gap to close and the median gap closed over them, win/tie/loss "
            "of the distilled vs the scratch student on the mean KD gain, and the mean rank (1 = best) of "
            "the configuration's distilled student over the datasets where every configuration has "
            "one, with the Friedman test and the Nemenyi critical difference (alpha 0.05) of those ranks.",
        )
    )
    rows = []
    for framework in frameworks:
        ranking = rank_configurations(entries, framework)
        rank_of = dict(zip(ranking["numbers"], ranking["mean_ranks"]))
        chi2, p = ranking["friedman"]
        for number in ranking["numbers"]:
            es = [e for e in entries if e["framework"] == framework and e["number"] == number]
            closed = [e["gap"]["closed"].mean for e in es if e["gap"]["present"]]
            gains = [e["kd_gain"].mean for e in es]
            wins = "/".join(map(str, stats.win_tie_loss(gains)))
            rows.append(
                [
                    framework,
                    *([number, es[0]["variant"]] if several else []),
                    len(es),
                    stats.median(gains),
                    f"{len(closed)}/{len(es)}",
                    stats.median(closed),
                    wins,
                    rank_of[number],
                    ranking["datasets"],
                    chi2,
                    p,
                    ranking["cd"],
                ]
            )
    blocks.append(
        Table(
            "payoff_ranks",
            [
                "framework",
                *(["#", "configuration"] if several else []),
                "datasets",
                "median KD gain %",
                "with a gap",
                "median gap closed %",
                "kd vs scratch win/tie/loss",
                "mean rank",
                "ranked on",
                "Friedman chi2",
                "Friedman p",
                "Nemenyi CD",
            ],
            rows,
        )
    )
    if not several:
        blocks.append(("p", "One configuration: there are no configurations to rank (a [sweep] makes several)."))
    return blocks
