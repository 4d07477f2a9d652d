"""The blocks a report is made of, besides headings and paragraphs (``("h2", text)``, ``("p", text)``):
tables and figures, each written to its own files beside the report (``render.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from distillbench.benchmarks.reporting import figures


@dataclass
class Table:
    name: str  # file stem under tables/
    columns: list[str]
    rows: list[list]  # cells: None, str, int, float or Estimate


def entry_columns(configurations: bool) -> list[str]:
    """The first columns of a table of one row per (dataset, framework[, configuration]) entry."""
    return ["dataset", "framework", *(["#", "configuration"] if configurations else []), "metric"]


def entry_cells(e: dict, configurations: bool) -> list:
    """An entry's cells under ``entry_columns``."""
    return [e["label"], e["framework"], *([e["number"], e["variant"]] if configurations else []), e["metric"]]


@dataclass
class Figure:
    name: str  # file stem under figures/
    caption: str
    png: bytes
    svg: bytes


def make_figure(name: str, draw, *args, caption: str) -> Figure:
    return Figure(name, caption, *figures.render(draw, *args))
