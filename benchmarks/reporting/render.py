"""A report's blocks as files: Markdown (GitHub-flavoured, written with ``distillbench.markdown``), one
self-contained HTML page, and each table as CSV and LaTeX. Every string is escaped for the format it
lands in: dataset names, notes and error messages are user-uploaded text."""

from __future__ import annotations

import base64
import csv
import html
import io

from distillbench.benchmarks.reporting.blocks import Figure, Table
from distillbench.benchmarks.reporting.stats import Estimate
from distillbench.text import markdown_table, md_escape


def _number(value, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def cell(value) -> str:
    """A cell as text: '-' for missing; an Estimate as 'mean ± half' (the mean alone with one value),
    its note in brackets after it."""
    if value is None:
        return "-"
    if isinstance(value, Estimate):
        if value.mean is None:
            return "-"
        return (
            _number(value.mean)
            + ("" if value.half is None else f" ± {_number(value.half, 3)}")
            + (f" [{value.note}]" if value.note else "")
        )
    return _number(value)


def _numeric(value) -> bool:
    return isinstance(value, (int, float, Estimate)) and not isinstance(value, bool)


def _numeric_column(table: Table, i: int) -> bool:
    cells = [row[i] for row in table.rows if row[i] is not None]
    return bool(cells) and all(map(_numeric, cells))


def _has_estimates(table: Table) -> list[bool]:
    return [any(isinstance(row[i], Estimate) for row in table.rows) for i in range(len(table.columns))]


def table_csv(table: Table) -> str:
    """Full-precision values; an Estimate column becomes two: the mean and 'ci95' (the half-width)."""
    wide = _has_estimates(table)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([x for c, w in zip(table.columns, wide) for x in ([c, f"{c} ci95"] if w else [c])])
    for row in table.rows:
        writer.writerow(
            [
                x
                for v, w in zip(row, wide)
                for x in ((list(v[:2]) if isinstance(v, Estimate) else [v, None]) if w else [v])
            ]
        )
    return out.getvalue()


TEX_SPECIALS = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "|": r"\textbar{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def tex_escape(text: str) -> str:
    return "".join(TEX_SPECIALS.get(c, c) for c in text)


def table_tex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs})."""

    def line(cells):
        return " & ".join(cells) + r" \\"

    align = "".join("r" if _numeric_column(table, i) else "l" for i in range(len(table.columns)))
    return "\n".join(
        [
            r"\begin{tabular}{" + align + "}",
            r"\toprule",
            line(tex_escape(c) for c in table.columns),
            r"\midrule",
            *(line(tex_escape(cell(v)).replace("±", r"$\pm$") for v in row) for row in table.rows),
            r"\bottomrule",
            r"\end{tabular}",
            "",
        ]
    )


# ---------------------------------------------------------------- Markdown


def to_markdown(title: str, blocks: list) -> str:
    lines = [f"# {md_escape(title)}", ""]
    for block in blocks:
        if isinstance(block, Table):
            lines += [
                markdown_table(block.columns, [[cell(v) for v in row] for row in block.rows]),
                "",
                f"_Table: [tables/{block.name}.csv](tables/{block.name}.csv), "
                f"[tables/{block.name}.tex](tables/{block.name}.tex)_",
            ]
        elif isinstance(block, Figure):
            lines += [
                f"![{md_escape(block.caption)}](figures/{block.name}.png)",
                "",
                f"_Figure: {md_escape(block.caption)} ([SVG](figures/{block.name}.svg))._",
            ]
        else:
            kind, text = block
            lines.append(f"## {md_escape(text)}" if kind == "h2" else md_escape(text))
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- HTML

CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328; margin: 0; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 24px; border-bottom: 1px solid #d0d7de; padding-bottom: 6px; }
h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-size: 12.5px; }
th, td { border: 1px solid #d0d7de; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfcfd; }
figure { margin: 16px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption, .files { color: #57606a; font-size: 12px; }
"""


def _html_cell(value) -> str:
    return f"<td{' class=num' if _numeric(value) else ''}>{html.escape(cell(value))}</td>"


def html_table(table: Table) -> str:
    """A table as HTML, every cell escaped."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "\n".join("<tr>" + "".join(_html_cell(v) for v in row) + "</tr>" for row in table.rows)
    return (
        f'<div class="scroll"><table id="table-{table.name}"><thead><tr>{head}</tr></thead>'
        f"<tbody>\n{body}\n</tbody></table></div>"
    )


def to_html(title: str, blocks: list) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Table):
            parts.append(html_table(block) + f'<p class="files">tables/{block.name}.csv, tables/{block.name}.tex</p>')
        elif isinstance(block, Figure):
            data = base64.b64encode(block.png).decode("ascii")
            caption = html.escape(block.caption)
            parts.append(
                f'<figure id="figure-{block.name}"><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption} (figures/{block.name}.png, .svg)</figcaption></figure>"
            )
        else:
            kind, text = block
            parts.append(f"<h2>{html.escape(text)}</h2>" if kind == "h2" else f"<p>{html.escape(text)}</p>")
    return html_page(title, "\n".join(parts))


def html_page(title: str, body: str, css: str = "") -> str:
    """One self-contained page around ``body`` (HTML whose every outside string is already escaped)."""
    # The policy forbids scripts and any outside resource: the page is data only, even if an escape were missed.
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{CSS}{css}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""
