"""Writing a file so that a reader sees the old one or the new one, never a part of it."""

from __future__ import annotations

import os
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
