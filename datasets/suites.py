"""Benchmark suites as data: TOML files listing OpenML dataset IDs.

A suite file (see suites/*.toml) has an optional `name` (default: the file's stem), an optional
`description` and a non-empty `datasets` array whose items are either a dataset ID or a table
`{ id = 187, target = "class", note = "wine" }` (`target` overrides the dataset's default target), or
an OpenML task `"openml/t/N"` (its dataset, target and cross-validation splits: ``tasks.py``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from distillbench.errors import UserError
from distillbench.validate import folder_name

SUITES_DIR = Path(__file__).parent / "suites"
ENTRY_KEYS = {"id", "target", "note"}


TASK_PREFIX = "openml/t/"


@dataclass(frozen=True)
class SuiteEntry:
    dataset_id: int  # 0 for a task entry until its task is read (``tasks.resolve``)
    target: str | None = None  # None: the dataset's default target
    note: str = ""
    task_id: int | None = None  # an OpenML task: its dataset, target and splits (``tasks.py``)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    entries: list[SuiteEntry]


def list_suites() -> list[str]:
    """The names of the suites shipped with distillbench."""
    return sorted(path.stem for path in SUITES_DIR.glob("*.toml"))


def load_suite(name_or_path: str) -> Suite:
    """A shipped suite by name, or a suite file by path (anything ending in .toml or holding a /)."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        path = Path(name_or_path)
    else:
        path = SUITES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise UserError(
                f"unknown suite {name_or_path!r}: choose one of {', '.join(list_suites())}, or give a .toml file"
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"suite file {path} cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"suite file {path} does not parse: {exc}") from None

    datasets = data.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise UserError(f"suite file {path} names no dataset: it needs a non-empty `datasets` array")
    entries = [_entry(item, path) for item in datasets]
    seen = set()
    for entry in entries:
        if entry.task_id is not None:
            continue  # its dataset is known when its task is read; a run refuses a dataset twice
        if (entry.dataset_id, entry.target) in seen:
            raise UserError(f"suite file {path} lists dataset {entry.dataset_id} twice")
        seen.add((entry.dataset_id, entry.target))
    # The name becomes part of the run's folder name (results/<time>-<suite>) and a baseline's.
    name = folder_name(data.get("name", path.stem), f"suite file {path}: name")
    return Suite(name=name, description=str(data.get("description", "")), entries=entries)


def task_entry(text: str, what: str) -> SuiteEntry:
    """``openml/t/N``: OpenML task N, or a UserError naming ``what``."""
    number = text[len(TASK_PREFIX) :] if text.startswith(TASK_PREFIX) else ""
    if not (number.isdigit() and int(number) > 0):
        raise UserError(f"{what} {text!r}: an OpenML task is written openml/t/N, N a positive task ID")
    return SuiteEntry(0, task_id=int(number))


def _entry(item: object, path: Path) -> SuiteEntry:
    if isinstance(item, str) and item.startswith(TASK_PREFIX):
        return task_entry(item, f"suite file {path}: entry")
    table = item if isinstance(item, dict) else {"id": item}
    dataset_id, target, note = table.get("id"), table.get("target"), table.get("note", "")
    if (
        set(table) - ENTRY_KEYS
        or type(dataset_id) is not int
        or dataset_id < 1
        or not isinstance(target, str | None)
        or not isinstance(note, str)
    ):
        raise UserError(
            f"suite file {path}: bad dataset entry {item!r}: give an OpenML dataset ID, an OpenML task "
            "as 'openml/t/N', or a table with an integer `id` and optional strings `target` and `note`"
        )
    return SuiteEntry(dataset_id, target, note)
