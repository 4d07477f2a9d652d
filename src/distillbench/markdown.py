"""The one way the project writes Markdown (GitHub-flavoured): text from outside (dataset names,
config labels, error messages, paths, notes) goes through ``escape`` and tables through ``table``,
so that no such text can end a table row, start a heading, a list or a quote, open a code span or
fence, embed raw HTML, an image or a link, or typeset math. ``report.md`` and ``compare --md`` (the
CI gate's summary) are both written with these.
"""

from __future__ import annotations

import re

# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that make structure
# (emphasis, code, links and images, headings, tables, strikethrough, math). `&`, `<` and `>` become
# entities instead: no raw HTML, no autolink, no blockquote, no entity written by the data.
_BACKSLASHED = set("\\`*[]#|!~$")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")  # newlines above all: the text stays on one line


def escape(text: object) -> str:
    """``text`` as literal inline text: one line, rendered exactly as written.

    ``_`` is escaped unless it sits between two letters or digits, where GFM never reads it as
    emphasis (so that ``student_kd`` stays readable in the raw file). It is inline text:
    the writer starts each line with its own text ("| ", "## ", "- baseline: "), so that ``-`` or
    ``1.`` from the data never begins a block."""
    text = _CONTROL.sub(" ", str(text))
    out = []
    for i, c in enumerate(text):
        if c in _ENTITIES:
            out.append(_ENTITIES[c])
        elif c in _BACKSLASHED or (c == "_" and not (0 < i < len(text) - 1 and text[i - 1].isalnum()
                                                      and text[i + 1].isalnum())):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def table(header, rows) -> str:
    """A GFM table, every cell escaped (cells are any values; each is written as ``str``)."""
    def line(cells):
        return "| " + " | ".join(escape(c) for c in cells) + " |"
    header = list(header)
    return "\n".join([line(header), "|" + "---|" * len(header), *(line(row) for row in rows)])
