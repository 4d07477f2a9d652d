"""What every layer shares: the atomic write (files.py) and the text of tables and times (text.py)."""

from __future__ import annotations

import time

import pytest

from distillbench.files import replaced_atomically, write_atomic
from distillbench.text import markdown_table, text_table, utc_time


def test_an_atomic_write_replaces_the_file_or_leaves_it_as_it_was(tmp_path) -> None:
    path = tmp_path / "manifest.json"
    write_atomic(path, "old\n")
    write_atomic(path, b"new\n")
    assert path.read_text() == "new\n"
    with pytest.raises(RuntimeError), replaced_atomically(path) as partial:
        partial.write_text("half")
        raise RuntimeError("killed while writing")
    assert path.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no partial file left


def test_tables_escape_markdown_and_align_text() -> None:
    rows = [["iris | <b>", "0.9"], ["a", "12.25"]]
    assert markdown_table(("dataset", "accuracy"), rows).splitlines() == [
        "| dataset | accuracy |",
        "|---|---|",
        r"| iris \| &lt;b&gt; | 0.9 |",
        "| a | 12.25 |",
    ]
    assert text_table(("dataset", "accuracy"), rows).splitlines() == [
        "dataset     accuracy",
        "iris | <b>  0.9",
        "a           12.25",
    ]
    assert text_table(("a", "b"), []) == "a  b"


def test_times_are_utc_whatever_the_local_zone(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert utc_time(1764438843.5) == "2025-11-29 17:54:03 UTC"
        assert utc_time(None) == "-"
    finally:
        monkeypatch.undo()
        time.tzset()
