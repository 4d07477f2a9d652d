"""Markdown written from hostile text (dataset names, run ids, paths, error messages): ``report.md`` and
`compare --md` (the CI gate's summary) keep exactly the structure the program meant, checked by
parsing them with a CommonMark parser (markdown-it-py, with GFM tables and strikethrough)."""

from __future__ import annotations

import json
import re

import pytest
from markdown_it import MarkdownIt

from distillbench.benchmarks.reporting.blocks import Figure, Table
from distillbench.benchmarks.reporting.render import cell, to_markdown
from distillbench.benchmarks.reporting.report import build
from distillbench.benchmarks.store.run_folder import read_run
from distillbench.benchmarks.tracking.compare import compare_runs
from distillbench.benchmarks.tracking.comparison_text import COLUMNS, JOB_COLUMNS, format_comparison
from distillbench.text import markdown_table, md_escape
from test_compare import edit, make_manifest, make_records, write_run
from test_report import copy_run

GFM = MarkdownIt("commonmark").enable(["table", "strikethrough"])
HOSTILE = [
    "iris\n# Heading",
    "```",
    "~~~ fenced",
    "![x](http://evil/x.png)",
    "[a](javascript:alert(1))",
    "a|b",
    "<img src=x onerror=alert(1)> &amp; \\",
    "`code` *em* _em_ ~~gone~~ $x$ **b**",
    "[ref]: http://evil\r\n> quote\u2028- item",
]
# What the data may not make: links, images, raw HTML, code, headings, quotes, lists, rules.
LIVE = {
    "link_open",
    "image",
    "html_inline",
    "html_block",
    "code_inline",
    "fence",
    "code_block",
    "heading_open",
    "blockquote_open",
    "bullet_list_open",
    "ordered_list_open",
    "hr",
    "s_open",
    "em_open",
    "strong_open",
}


def flat(text: str) -> list:
    """Every token of the parsed text, inline ones after their block."""
    out = []
    for token in GFM.parse(text):
        out.append(token)
        out += token.children or []
    return out


def rendered(inline) -> str:
    """An inline token as rendered text."""
    return "".join(c.content for c in inline.children)


def one_line(text: str) -> str:
    """What a line break in the text becomes: a space."""
    return re.sub("[\r\n\u2028]", " ", text)


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_text_renders_as_itself_and_nothing_else(text: str) -> None:
    tokens = flat(md_escape(text))
    assert [t.type for t in tokens] == ["paragraph_open", "inline", "text", "paragraph_close"], tokens
    assert tokens[2].content == one_line(text).strip()


def test_a_table_keeps_its_rows_and_cells_whatever_they_hold() -> None:
    tokens = flat(markdown_table(["name", "note"], [[text, f"x {text} y"] for text in HOSTILE]))
    assert not LIVE & {t.type for t in tokens}
    assert sum(t.type == "tr_open" for t in tokens) == len(HOSTILE) + 1
    cells = [rendered(t) for t in tokens if t.type == "inline"]
    assert len(cells) == 2 * (len(HOSTILE) + 1)
    assert cells[2::2] == [one_line(t).strip() for t in HOSTILE]


def table_cells(tokens: list) -> list[list[str]]:
    """Each table's rows, each row's cells as rendered text."""
    tables, row = [], None
    for t in tokens:
        if t.type == "table_open":
            tables.append([])
        elif t.type == "tr_open":
            row = []
            tables[-1].append(row)
        elif t.type == "inline" and row is not None:
            row.append(rendered(t))
        elif t.type == "tr_close":
            row = None
    return tables


@pytest.mark.slow
def test_report_md_has_the_structure_of_its_blocks_whatever_the_names(tmp_path) -> None:
    """Every dataset renamed to hostile text, and a failed dataset's error too: the report's headings,
    tables (rows and cells), figures and links are those of its blocks, the names are text."""
    names = dict(zip((61, 37, 54, 531, 183, 187), HOSTILE))
    run = copy_run(tmp_path / "run", names=names)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["datasets"][-1]["error"] = HOSTILE[-1] + " " + HOSTILE[3]
    (run / "manifest.json").write_text(json.dumps(manifest))
    title, blocks = build(read_run(run))
    tokens = flat(to_markdown(title, blocks))

    assert not (LIVE - {"heading_open", "link_open", "em_open", "image"}) & {t.type for t in tokens}
    headings = [rendered(tokens[i + 1]) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == [title] + [block[1] for block in blocks if isinstance(block, tuple) and block[0] == "h2"]
    tables = [b for b in blocks if isinstance(b, Table)]
    expected = [[list(t.columns), *([one_line(cell(v)) for v in row] for row in t.rows)] for t in tables]
    assert table_cells(tokens) == expected
    assert any(name.strip() in str(cells) for name in map(one_line, HOSTILE) for cells in table_cells(tokens))
    images = [t.attrGet("src") for t in tokens if t.type == "image"]
    assert images == [f"figures/{b.name}.png" for b in blocks if isinstance(b, Figure)]
    links = [t.attrGet("href") for t in tokens if t.type == "link_open"]
    assert links == [
        x
        for b in blocks
        for x in (
            [f"tables/{b.name}.csv", f"tables/{b.name}.tex"]
            if isinstance(b, Table)
            else [f"figures/{b.name}.svg"]
            if isinstance(b, Figure)
            else []
        )
    ]


def test_compare_md_keeps_its_structure_whatever_the_names(tmp_path) -> None:
    """`compare --md` with hostile dataset names, a hostile error message and run folder name: its
    headings are its own, its tables keep their rows, nothing live comes from the data."""

    def rename(records):
        for r in records:
            r["dataset_name"] = HOSTILE[0] if r["dataset_id"] == 61 else HOSTILE[3]
        return records

    baseline = write_run(tmp_path / "baseline", rename(make_records("baseline")))
    worse = edit(
        rename(make_records("cand")),
        61,
        "tensorflow",
        "student_kd",
        lambda r: r["metrics"].update(accuracy=r["metrics"]["accuracy"] - 0.2),
    )
    edit(worse, 531, "torch", "teacher", lambda r: r.update(status="failed", error=HOSTILE[4] + HOSTILE[1]))
    folder = tmp_path / "x](http:evil)#`` <b>"
    candidate = write_run(folder, worse, make_manifest("## run\n```", suite="[s](http://evil)"))
    comparison = compare_runs(baseline, candidate)
    tokens = flat(format_comparison(comparison, "all", markdown=True))

    assert not (LIVE - {"heading_open", "bullet_list_open", "strong_open"}) & {t.type for t in tokens}
    headings = [rendered(tokens[i + 1]) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == ["distillbench compare", "Regressions", "Jobs missing, failed, new or fixed", "Every row"]
    rows, jobs = comparison.regressions("all")
    tables = table_cells(tokens)
    assert [len(t) - 1 for t in tables] == [len(rows), len(jobs), len(comparison.jobs), len(comparison.rows)]
    assert [len(row) for t in tables for row in t] == [len(t[0]) for t in tables for _ in t]
    assert [t[0] for t in tables] == [list(COLUMNS), list(JOB_COLUMNS), list(JOB_COLUMNS), list(COLUMNS)]
    assert sum(t.type == "bullet_list_open" for t in tokens) == 1
    bullets = [
        rendered(tokens[i + 1])
        for i, t in enumerate(tokens)
        if t.type == "paragraph_open" and tokens[i - 1].type == "list_item_open"
    ]
    assert str(folder) in bullets[1] and "## run ```" in bullets[1] and "[s](http://evil)" in bullets[1]
    assert f"{HOSTILE[4]}{HOSTILE[1]}" in str(tables[1])
