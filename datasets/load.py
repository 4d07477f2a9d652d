"""Load one OpenML dataset through the `openml` package: features, target and task type."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import arff
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from distillbench.datasets.sources import OpenMLCache, file_sha256, one_line
from distillbench.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class RawDataset:
    """A dataset as loaded: row-id and ignored attributes removed, rows without a target dropped."""

    dataset_id: int
    name: str
    task: str  # "classification" (the target is nominal) or "regression" (it is numeric)
    target: str
    X: pd.DataFrame
    y: pd.Series  # classification: categorical, only the classes that occur; regression: float64
    categorical: list[str]  # the feature columns treated as categorical, the others are numeric
    checksum: str  # sha256 of the data file
    data_file: Path  # in the writable cache
    source_file: Path | None  # the file of the read-only source it was copied from, if any
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return _label(self.dataset_id, self.name)

    @property
    def class_names(self) -> list[str]:
        """The classes in label order (their order in the dataset's declaration); [] for regression."""
        return [str(c) for c in self.y.cat.categories] if self.task == "classification" else []

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict:
        """What `distillbench datasets info` shows, JSON-ready."""
        return {
            "dataset_id": self.dataset_id,
            "name": self.name,
            "task": self.task,
            "target": self.target,
            "rows": len(self.X),
            "features": {
                "numeric": self.X.shape[1] - len(self.categorical),
                "categorical": len(self.categorical),
            },
            "classes": self.n_classes,
            "class_names": self.class_names,
            "missing_values": int(self.X.isna().sum().sum()),
            "columns_with_missing": int(self.X.isna().any().sum()),
            "checksum_sha256": self.checksum,
            "data_file": str(self.data_file),
            "source_file": str(self.source_file) if self.source_file else None,
            "notes": self.notes,
        }


def _label(dataset_id: int, name: str) -> str:
    return f"dataset {dataset_id} ({name})"


def load_dataset(dataset_id: int, *, target: str | None = None, cache: OpenMLCache | None = None) -> RawDataset:
    """Load `dataset_id` with its default target, or `target` if given.

    Raises UserError, naming the dataset, for an unknown or unreachable dataset, a data file that
    does not parse, a target that is not a column, has one class or is constant. Columns that are
    entirely missing are dropped, logged and noted.
    """
    cache = cache or OpenMLCache.resolve()
    dataset = cache.fetch(dataset_id)
    label = _label(dataset_id, dataset.name)
    target = target or dataset.default_target_attribute
    if not target:
        raise UserError(f"{label} has no default target: name one (`target` in the suite, or --target)")
    try:
        frame, _, _, names = dataset.get_data()  # without the row-id and ignored attributes
    except (arff.ArffException, ValueError, KeyError, IndexError) as exc:
        raise UserError(f"{label}: the data file {dataset.data_file} does not parse: {one_line(exc)}") from None
    if target not in names:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise UserError(f"{label}: the target {target!r} is not a column (columns: {shown})")

    notes = []
    y = frame.pop(target)
    if y.isna().any():
        notes.append(f"dropped {int(y.isna().sum())} rows without a target")
        frame, y = frame[y.notna()], y[y.notna()]
    empty = [c for c in frame.columns if frame[c].isna().all()]
    if empty:
        notes.append(f"dropped {len(empty)} column(s) entirely missing: {', '.join(empty)}")
        frame = frame.drop(columns=empty)
    for note in notes:
        logger.warning("%s: %s", label, note)
    if frame.shape[1] == 0:
        raise UserError(f"{label} has no feature columns besides the target {target!r}")

    if is_numeric_dtype(y) and not is_bool_dtype(y):
        task, y = "regression", y.astype("float64")
        if y.nunique() < 2:
            raise UserError(f"{label}: the target {target!r} is constant, there is nothing to predict")
    else:
        task, y = "classification", y.astype("category").cat.remove_unused_categories()
        classes = ", ".join(map(str, y.cat.categories))
        if len(y.cat.categories) < 2:
            raise UserError(
                f"{label}: the target {target!r} has fewer than 2 classes ({classes}), there is nothing to classify"
            )

    source = cache.source_entry(dataset_id)
    data_file = Path(dataset.data_file)
    return RawDataset(
        dataset_id=dataset_id,
        name=dataset.name,
        task=task,
        target=target,
        X=frame.reset_index(drop=True),
        y=y.reset_index(drop=True),
        categorical=[c for c in frame.columns if is_bool_dtype(frame[c]) or not is_numeric_dtype(frame[c])],
        checksum=file_sha256(data_file),
        data_file=data_file,
        source_file=source / data_file.name if source and (source / data_file.name).is_file() else None,
        notes=notes,
    )
