"""Text that every command writes the same way: tables (aligned for a terminal, or GitHub-flavoured
Markdown) and times (always UTC)."""

from __future__ import annotations

import time


def utc_time(timestamp: float | None) -> str:
    """A time as "2026-11-29 17:54:03 UTC"; "-" for none."""
    return "-" if not timestamp else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def md_escape(text: str) -> str:
    """Plain text for GFM: no HTML (< >), no table breaks (|), one line."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", r"\|")
            .replace("\r", " ").replace("\n", " "))


def markdown_table(columns, rows: list[list[str]]) -> str:
    """A GFM table of text cells, each escaped (``md_escape``)."""
    lines = ["| " + " | ".join(md_escape(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows])


def text_table(columns, rows: list[list[str]]) -> str:
    """Text cells in columns as wide as their widest cell, two spaces apart."""
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [list(columns), *rows])
