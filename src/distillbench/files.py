"""Writing a file so that a reader sees the old one or the new one, never a part of it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without an error, one rename
    puts it in place of ``path``. The name holds the process id, so two writers never share it; after
    an error it is removed and ``path`` is left as it was."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes) -> None:
    with replaced_atomically(path) as partial:
        partial.write_bytes(data.encode() if isinstance(data, str) else data)


@contextmanager
def replaced_folder_atomically(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; when the block ends without an error, it takes
    ``path``'s place (a folder already there is moved aside, then removed). A reader sees the old
    folder, the new one, or for a moment while one is replaced none, never a part of one. After an
    error the temporary folder is removed and ``path`` is left as it was."""
    path = Path(path)
    partial, old = (path.with_name(f".{path.name}.{os.getpid()}.{end}") for end in ("partial", "old"))
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed process of the same id
    partial.mkdir(parents=True)
    try:
        yield partial
        if path.exists():
            os.replace(path, old)
        os.replace(partial, path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
