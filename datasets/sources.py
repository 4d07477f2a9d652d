"""Where OpenML data comes from: a writable openml cache, optionally filled from a read-only source.

openml-python writes into its cache (pickles, locks) and deletes a dataset's folder when anything
inside `get_dataset` fails, so it is only ever pointed at the writable cache. A pre-warmed cache that
must stay untouched (such as ../shared/openml-cache, read-only in CI) is named as a *source*: the
files of each entry are copied into the writable cache before openml looks at it, and the source is
only ever read.

What openml is shown is verified first. Only the plain files of an entry (`ENTRY_FILES`) are trusted:
every pickle in the entry is deleted before openml opens the folder (openml unpickles its
`dataset.pkl.py3`, `features.xml.pkl`, ... whenever they exist, and a pickle from a cache that came
from elsewhere can run any code), so openml always parses the XML and ARFF files. Those must parse,
the description must be the dataset's, and the data file must have the md5 checksum the description
carries. An entry that fails is moved aside into `distillbench-quarantine/` under the cache (never
deleted), copied again from the source where the source's entry is sound, and otherwise fails that
dataset with a message that says what is wrong and where the entry went.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tempfile
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillbench.errors import UserError
from distillbench.files import replaced_atomically

logger = logging.getLogger(__name__)

CACHE_ENV = "OPENML_CACHE_DIR"
SOURCE_ENV = "DISTILLBENCH_OPENML_SOURCE"
DEFAULT_CACHE = "~/.cache/distillbench/openml"
# openml-python's layout for www.openml.org, inside a cache root.
DATASETS_SUBDIR = Path("org", "openml", "www", "datasets")
ENTRY_FILES = ("description.xml", "features.xml", "qualities.xml", "dataset.arff")
PICKLES = (".pkl", ".pkl.py3")  # how openml's cache files end (dataset.pkl.py3, features.xml.pkl, ...)
QUARANTINE = "distillbench-quarantine"  # where corrupt entries are moved, under the cache root
OML = "{http://openml.org/openml}"
PROBE_TIMEOUT_S = 3.0
OFFLINE_HINT = (
    f"point --openml-source (or {SOURCE_ENV}) at a pre-warmed OpenML cache such as "
    "../shared/openml-cache, or run `distillbench datasets prefetch --suite NAME --cache DIR` "
    "on a machine that is online and pass that DIR here as --cache or --openml-source"
)


def one_line(error: object) -> str:
    """A message, or an exception's, on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def entry_problem(folder: Path, dataset_id: int) -> str | None:
    """What is wrong with the files of an entry, or None: each XML file present must be UTF-8 and
    parse, the description must be of `dataset_id`, and the data file must have the md5 checksum
    the description gives. Files that are absent are not a problem here (openml fetches them)."""
    description = None
    for name in ("description.xml", "features.xml", "qualities.xml"):
        if (folder / name).is_file():
            try:
                root = ET.fromstring((folder / name).read_bytes().decode("utf-8"))
            except (ET.ParseError, UnicodeDecodeError) as exc:
                return f"{name} is not valid XML ({one_line(exc)})"
            if name == "description.xml":
                description = root
    if description is None:
        return None
    described = (description.findtext(OML + "id") or "").strip()
    if description.tag != OML + "data_set_description" or described != str(dataset_id):
        return f"description.xml is not the description of OpenML dataset {dataset_id}"
    expected = (description.findtext(OML + "md5_checksum") or "").strip().lower()
    data = folder / "dataset.arff"
    if expected and data.is_file():
        with open(data, "rb") as fh:
            actual = hashlib.file_digest(fh, "md5").hexdigest()
        if actual != expected:
            return (
                f"dataset.arff has md5 {actual} but its description.xml gives {expected} "
                "(the file is truncated or altered)"
            )
    return None


@dataclass(frozen=True)
class OpenMLCache:
    """A writable openml cache `root`, filled entry by entry from an optional read-only `source`."""

    root: Path
    source: Path | None = None

    @classmethod
    def resolve(cls, cache: str | Path | None = None, source: str | Path | None = None) -> OpenMLCache:
        """The cache from the options, else the environment, else the default."""
        root = Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser().resolve()
        source = source or os.environ.get(SOURCE_ENV)
        if not source:
            return cls(root)
        source = Path(source).expanduser().resolve()
        if not (source / DATASETS_SUBDIR).is_dir():
            raise UserError(f"OpenML source {source} is not an OpenML cache (it has no {DATASETS_SUBDIR} folder)")
        if source == root:
            raise UserError(
                f"the OpenML cache {root} is also the source: the cache must be a separate, writable folder"
            )
        return cls(root, source)

    def entry(self, dataset_id: int) -> Path:
        return self.root / DATASETS_SUBDIR / str(dataset_id)

    def source_entry(self, dataset_id: int) -> Path | None:
        """The dataset's entry in the source. distillbench's builtin datasets (`builtin.py`) come from
        the builtin folder under the cache, written on first use, where the source lacks them."""
        from distillbench.datasets.builtin import ensure_builtin_source, is_builtin

        entry = None if self.source is None else self.source / DATASETS_SUBDIR / str(dataset_id)
        if is_builtin(dataset_id) and (entry is None or not entry.is_dir()):
            return ensure_builtin_source(self.root) / DATASETS_SUBDIR / str(dataset_id)
        return entry

    def unreachable(self) -> str | None:
        """Why openml's server cannot be reached (its host and the error), or None where it can, or
        might be through a proxy. Imports openml (seconds)."""
        return server_problem(self._openml().config.server)

    def status(self, dataset_id: int) -> str:
        """'cache' or 'source' (where the data file is, the cache first), or 'missing'."""
        if (self.entry(dataset_id) / "dataset.arff").is_file():
            return "cache"
        source = self.source_entry(dataset_id)
        return "source" if source is not None and (source / "dataset.arff").is_file() else "missing"

    def data_file(self, dataset_id: int) -> Path:
        """The dataset's data file in the writable cache; openml is only imported if it must fetch it."""
        self._stage(dataset_id)
        entry = self.entry(dataset_id)
        if not ((entry / "description.xml").is_file() and (entry / "dataset.arff").is_file()):
            self.fetch(dataset_id)
        return entry / "dataset.arff"

    def fetch(self, dataset_id: int, *, metadata: bool = False) -> Any:
        """`openml.datasets.get_dataset(dataset_id)` on the writable cache, data file included.

        With `metadata`, the feature and quality files are fetched too (a complete entry, for
        caches that other machines will use as a source). Downloads only what the cache and the
        source lack; fails within seconds, with a message saying what to do, when that needs
        openml.org and it cannot be reached.
        """
        if dataset_id < 1:
            raise UserError(f"{dataset_id} is not an OpenML dataset ID (IDs are positive integers)")
        self._stage(dataset_id)
        openml = self._openml()
        needed = ENTRY_FILES if metadata else ("description.xml", "dataset.arff")
        downloads = not all((self.entry(dataset_id) / name).is_file() for name in needed)
        if downloads:
            self._require_server(dataset_id, openml.config.server)
        try:
            dataset = openml.datasets.get_dataset(
                dataset_id,
                download_data=True,
                download_qualities=metadata,
                download_features_meta_data=metadata,
            )
        except openml.exceptions.OpenMLServerException as exc:
            raise UserError(f"OpenML dataset {dataset_id}: {one_line(exc.message)} (OpenML error {exc.code})") from None
        except (openml.exceptions.PyOpenMLError, OSError) as exc:  # requests' errors are OSErrors
            raise UserError(
                f"OpenML dataset {dataset_id} could not be fetched ({one_line(exc)}); {OFFLINE_HINT}"
            ) from None
        if downloads:
            self._verify_fetched(dataset_id)
        return dataset

    def _openml(self) -> Any:
        """Import and configure openml for this cache (imported here: it takes seconds)."""
        # Read the ARFF file even where a parquet file exists, so the checksum is of the same file everywhere.
        os.environ["OPENML_SKIP_PARQUET"] = "true"
        import openml

        openml.config.set_root_cache_directory(self.root)
        openml.config.connection_n_retries = 1
        return openml

    def _stage(self, dataset_id: int) -> None:
        """Make the dataset's entry in the writable cache safe for openml to open: copy the files of
        the source's entry that it lacks, delete any pickle, and verify it (`entry_problem`). A
        corrupt entry is moved into the quarantine folder, then copied again from the source if the
        source's entry is sound; otherwise a UserError says what is wrong and where the entry went."""
        self._require_writable()
        source = self.source_entry(dataset_id)
        if source is not None and not source.is_dir():
            source = None
        self._copy(source, dataset_id)
        problem = entry_problem(self.entry(dataset_id), dataset_id)
        if problem is None:
            return
        moved = self._quarantine(dataset_id)
        if source is not None and entry_problem(source, dataset_id) is None:
            self._copy(source, dataset_id)
            logger.warning(
                "OpenML dataset %d: the cache's copy was corrupt (%s); moved it to %s and copied the "
                "entry again from %s",
                dataset_id,
                problem,
                moved,
                source,
            )
            return
        if source is not None:
            raise UserError(
                f"OpenML dataset {dataset_id} is corrupt in the source {source}: {problem}; the "
                f"cache's copy was moved to {moved}; repair the source's entry"
            )
        raise UserError(
            f"OpenML dataset {dataset_id}: its cache entry is corrupt ({problem}); moved it to {moved}; "
            "fetch it again (`distillbench datasets prefetch`) or name a sound copy with --openml-source"
        )

    def _verify_fetched(self, dataset_id: int) -> None:
        """After openml fetched files: the same checks as `_stage` (openml checks the md5 of a data file
        it downloads, not of one it finds)."""
        problem = entry_problem(self.entry(dataset_id), dataset_id)
        if problem is not None:
            moved = self._quarantine(dataset_id)
            raise UserError(f"OpenML dataset {dataset_id} is corrupt: {problem}; its cache entry was moved to {moved}")

    def _quarantine(self, dataset_id: int) -> Path:
        """Move the dataset's entry aside, out of openml's sight; returns where it went."""
        (self.root / QUARANTINE).mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        moved = Path(tempfile.mkdtemp(prefix=f"{stamp}-", dir=self.root / QUARANTINE)) / str(dataset_id)
        try:
            self.entry(dataset_id).rename(moved)
        except FileNotFoundError:  # another process (a worker) moved it aside at the same moment
            moved.parent.rmdir()
            return self.root / QUARANTINE
        return moved

    def _copy(self, source: Path | None, dataset_id: int) -> None:
        """Copy the plain files of the source's entry that the cache's entry lacks; delete every pickle
        in the cache's entry, so that openml parses the verified files instead of unpickling."""
        target = self.entry(dataset_id)
        if source is not None:
            target.mkdir(parents=True, exist_ok=True)
            for name in ENTRY_FILES:
                if (source / name).is_file() and not (target / name).exists():
                    with replaced_atomically(target / name) as partial:
                        shutil.copyfile(source / name, partial)  # contents only: the copy is writable
        if target.is_dir():
            for path in target.iterdir():
                if path.name.endswith(PICKLES):
                    path.unlink(missing_ok=True)

    def _require_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = f"cannot be created ({one_line(exc)})"
        else:
            problem = None if os.access(self.root, os.W_OK) else "is not writable"
        if problem:
            raise UserError(f"the OpenML cache {self.root} {problem}; choose another with --cache or {CACHE_ENV}")

    def _require_server(self, dataset_id: int, server: str) -> None:
        """Raise a UserError at once if the OpenML server cannot be reached (openml has no timeout)."""
        problem = server_problem(server)
        if problem:
            where = f"the cache {self.root}" + (f" or the source {self.source}" if self.source else "")
            raise UserError(f"OpenML dataset {dataset_id} is not in {where}, and {problem}; {OFFLINE_HINT}")


def server_problem(server: str) -> str | None:
    """'HOST cannot be reached (why)' if a connection to the server fails within seconds; None where it
    succeeds, or where a proxy is configured (only the proxy knows)."""
    url = urllib.parse.urlparse(server)
    if urllib.request.getproxies():
        return None
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"{url.hostname} cannot be reached ({one_line(exc)})"
    return None
