"""Text that every command writes the same way: tables (aligned for a terminal, or GitHub-flavoured
Markdown) and times (always UTC). Every Markdown the project writes (``report.md``, `compare --md`)
escapes outside text with ``md_escape`` and writes its tables with ``markdown_table``."""

from __future__ import annotations

import re
import time


def utc_time(timestamp: float | None) -> str:
    """A time as "2026-11-29 17:54:03 UTC"; "-" for none."""
    return "-" if not timestamp else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that make structure
# (emphasis, code, links and images, headings, tables, strikethrough, math). `&`, `<` and `>` become
# entities instead: no raw HTML, no autolink, no blockquote, no entity written by the data.
_MD_BACKSLASHED = set("\\`*[]#|!~$")
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")  # and the other control characters


def md_escape(text) -> str:
    """``text`` as literal inline GFM text, one line, rendered exactly as written: whatever a name,
    run id, path or error message holds, it cannot end a table row, start a heading, open a code span
    or fence, embed raw HTML, an image or a link, or typeset math.

    ``_`` is escaped unless it sits between two letters or digits, where GFM never reads it as
    emphasis (so that ``student_kd`` stays readable in the raw file). It is inline text: the writer
    starts each line with its own text ("| ", "## ", "- baseline: "), so that ``-`` or ``1.`` from
    the data never begins a block."""
    text = _LINE_BREAKS.sub(" ", str(text))
    out = []
    for i, c in enumerate(text):
        if c in _MD_ENTITIES:
            out.append(_MD_ENTITIES[c])
        elif c in _MD_BACKSLASHED or (
            c == "_" and not (0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum())
        ):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def markdown_table(columns, rows) -> str:
    """A GFM table, every cell escaped (``md_escape``; cells are any values, each written as ``str``)."""

    def line(cells):
        return "| " + " | ".join(md_escape(c) for c in cells) + " |"

    columns = list(columns)
    return "\n".join([line(columns), "|" + "---|" * len(columns), *(line(row) for row in rows)])


def text_table(columns, rows: list[list[str]]) -> str:
    """Text cells in columns as wide as their widest cell, two spaces apart."""
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [list(columns), *rows])
