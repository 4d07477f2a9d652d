"""The one validation layer for values from outside: ``type=`` functions for the command-line options
of every command (argparse turns their refusal into one line and exit 2, see ``cli.Parser``), and
``folder_name`` for any text that becomes a folder or file name (a run id from a manifest, a
baseline's name).

A value is refused where it is read, so that nothing downstream runs on it: not a NaN budget that
fails every job, an empty dataset list that silently runs the default suite, a duplicate framework
whose job is run and discarded, or an output folder that is the root or a kernel file system.
"""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter
from pathlib import Path

from distillbench.errors import UserError

MAX_SEEDS = 1000  # a run of more seeds is a typo (and its job list alone would not fit in memory)
SEED_LIMIT = 2**32  # Keras seeds numpy's legacy generator, which takes only 0 <= seed < 2^32
# Kernel and device file systems: nothing of ours is written there (`--out /proc/x`).
SPECIAL_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))
_UNCLEAN = re.compile(r"[\x00-\x1f\x7f\u2028\u2029/]")  # line breaks, control characters, a path separator


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def folder_name(text, what: str) -> str:
    """``text`` if it is a plain folder (or file) name: one path component on one clean line (no
    ``/``, no control characters or line breaks, not ``.`` or ``..``, no spaces around it, at most
    255 bytes); else a UserError naming ``what``."""
    if isinstance(text, str) and text not in ("", ".", "..") and not _UNCLEAN.search(text) and text == text.strip():
        try:
            if len(text.encode("utf-8")) <= 255:
                return text
        except UnicodeEncodeError:  # a name from bytes that were not UTF-8 (surrogate escapes)
            pass
    shown = _shown(text) if isinstance(text, str) else f"{text!r} ({type(text).__name__})"
    raise UserError(f"{what} {shown}: not a plain folder name (one line, no '/', not '.' or '..', at most 255 bytes)")


def _type_error(text: str, expected: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {expected}, not {_shown(text)}")


def _int(text: str, low: int, high: int | None, expected: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise _type_error(text, expected) from None
    if value < low or (high is not None and value > high):
        raise _type_error(text, expected)
    return value


def positive_int(text: str) -> int:
    return _int(text, 1, None, "a whole number of at least 1")


def seed_count(text: str) -> int:
    return _int(text, 1, MAX_SEEDS, f"a number of seeds from 1 to {MAX_SEEDS}")


def folds(text: str) -> int:
    return _int(text, 2, MAX_SEEDS, f"a number of folds from 2 to {MAX_SEEDS}")


def seed(text: str) -> int:
    return _int(text, 0, SEED_LIMIT - 1, "a seed from 0 to 2^32 - 1")


def seeds(text: str) -> list[int]:
    """``--seeds``: a count N (the seeds 0..N-1), or a list of seeds ``A,B,...`` (``K,`` for seed K
    alone), each once; the seeds in increasing order."""
    if "," not in text:
        return list(range(seed_count(text)))
    items = text.strip().removesuffix(",") if text.count(",") == 1 else text
    chosen = sorted(comma_list(seed, "seed")(items))
    if len(chosen) > MAX_SEEDS:
        raise _type_error(text, f"at most {MAX_SEEDS} seeds")
    return chosen


def task_id(text: str) -> int:
    return _int(text, 1, None, "an OpenML task ID (a whole number of at least 1)")


def dataset_id(text: str) -> int:
    return _int(text, 1, None, "an OpenML dataset ID (a whole number of at least 1)")


def _float(text: str, ok, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _type_error(text, expected) from None
    if not math.isfinite(value) or not ok(value):
        raise _type_error(text, expected)
    return value


def positive_float(text: str) -> float:
    return _float(text, lambda v: v > 0, "a finite number above 0")


def nonnegative_float(text: str) -> float:
    return _float(text, lambda v: v >= 0, "a finite number of at least 0")


def probability(text: str) -> float:
    return _float(text, lambda v: 0 < v < 1, "a probability strictly between 0 and 1")


def comma_list(item, what: str):
    """A ``type=`` function for ``A,B,C``: each item parsed by ``item`` (a function of the text, or
    the collection of the names allowed), at least one, none empty, none twice."""
    if not callable(item):
        allowed = list(item)

        def item(text: str) -> str:
            if text not in allowed:
                raise argparse.ArgumentTypeError(f"unknown {what} {_shown(text)} (known: {', '.join(allowed)})")
            return text

    def parse(text: str) -> list:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"empty: name at least one {what}")
        parts = [part.strip() for part in text.split(",")]
        if "" in parts:
            raise argparse.ArgumentTypeError(f"{_shown(text)} has an empty item (a stray comma?)")
        values = [item(part) for part in parts]
        twice = [str(v) for v, n in Counter(values).items() if n > 1]
        if twice:
            raise argparse.ArgumentTypeError(f"{what} {', '.join(twice)} named more than once")
        return values

    parse.__name__ = f"{what} list"
    return parse


def _written_path(text: str, kind: str) -> str:
    path = Path(text)
    try:
        folder_name(path.name, "")
    except UserError:
        raise argparse.ArgumentTypeError(
            f"{_shown(text)}: name the {kind} itself (its last part must be a plain name: "
            "not '/', '.' or '..', one line)"
        ) from None
    resolved = path.resolve()
    for special in SPECIAL_FOLDERS:
        if special in (resolved, *resolved.parents):
            raise argparse.ArgumentTypeError(
                f"{_shown(text)} is in {special}, a kernel file system: not a place for files"
            )
    return text


def output_folder(text: str) -> str:
    """A folder the command writes into, as given: named by its last part (not ``/``, ``.`` or
    ``..``), outside the kernel's file systems (/proc, /sys, /dev). Whether it can be written is
    checked where it is used."""
    return _written_path(text, "folder")


def output_file(text: str) -> str:
    """A file the command writes, on the same terms as ``output_folder``."""
    return _written_path(text, "file")


def output_file_or_stdout(text: str) -> str:
    """``-`` (standard output), or a file as ``output_file``."""
    return text if text == "-" else output_file(text)
