"""Seeded splits and preparation fitted on the training split: the arrays both frameworks get."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from distillbench.datasets.load import RawDataset, load_dataset
from distillbench.datasets.sources import OpenMLCache, file_sha256, one_line
from distillbench.errors import UserError
from distillbench.files import replaced_atomically

logger = logging.getLogger(__name__)

# Bump when the preparation changes, so that arrays cached by older code are not reused.
PREP_VERSION = 2  # 2: onehot_groups
ARRAYS = ("x_train", "x_val", "x_test", "y_train", "y_val", "y_test")


@dataclass(frozen=True)
class Split:
    """Which rows are held out for testing: with ``folds`` None, the seeded holdout split (test_fraction
    of the rows); with ``folds`` K, fold ``fold`` (0..K-1) of the seeded K-fold of the rows, stratified
    for classification. Validation rows are carved from the rest in either case."""

    seed: int
    fold: int | None = None
    folds: int | None = None
    # An OpenML task's split (its repeat is the seed): the row indices of its training and test part.
    rows: tuple[np.ndarray, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if (self.fold is None) != (self.folds is None):
            raise ValueError(f"a split has a fold and a number of folds, or neither: {self}")
        if self.folds is not None and not (self.folds >= 2 and 0 <= self.fold < self.folds):  # type: ignore[operator]
            raise ValueError(f"fold {self.fold} of {self.folds} folds")

    def __str__(self) -> str:
        return f"seed {self.seed}" + ("" if self.folds is None else f" fold {self.fold}/{self.folds}")


@dataclass(frozen=True)
class PrepSettings:
    val_fraction: float = 0.2
    test_fraction: float = 0.2  # the training split is the rest: 60 % by default
    max_categories: int = 20  # one-hot columns per categorical feature; the rarest levels share one

    def __post_init__(self) -> None:
        if not (self.val_fraction > 0 and self.test_fraction > 0 and self.val_fraction + self.test_fraction < 1):
            fractions = f"val={self.val_fraction}, test={self.test_fraction}"
            raise UserError(f"split fractions {fractions}: each must be > 0 and their sum < 1")
        if self.max_categories < 2:
            raise UserError(f"max_categories={self.max_categories}: must be at least 2")


@dataclass
class Prepared:
    """One dataset, one seed: float32 features, targets ready for training.

    Classification targets are int64 labels 0..n_classes-1 (indices into class_names); regression
    targets are float32, standardised with the training mean and standard deviation: report
    metrics on `unstandardise(y)`.
    """

    dataset_id: int
    name: str
    task: str
    target: str
    seed: int
    n_classes: int  # 0 for regression
    class_names: list[str]
    feature_names: list[str]
    x_train: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    y_mean: float  # 0.0 for classification
    y_std: float  # 1.0 for classification
    checksum: str
    notes: list[str] = field(default_factory=list)
    # The feature columns of each one-hot encoded categorical column, one list per categorical
    # column in feature order: a generator of rows (a transfer set) treats each group as one
    # attribute, so that a generated row stays one-hot. Every other column is standardised numeric.
    onehot_groups: list[list[int]] = field(default_factory=list)
    # With --folds or a task: this split's fold and the number of folds (None: the holdout split);
    # the OpenML task whose split it is (None: the seed's own split).
    fold: int | None = None
    folds: int | None = None
    task_id: int | None = None

    def unstandardise(self, y: np.ndarray) -> np.ndarray:
        """Regression targets or predictions back in the dataset's units (float64)."""
        return np.asarray(y, dtype=np.float64) * self.y_std + self.y_mean


def _split(
    raw: RawDataset, split: Split, settings: PrepSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Row indices of train, validation and test of ``split``, stratified for classification, and notes.
    The test rows are the holdout's or the fold's; validation takes val_fraction / (1 - test_fraction)
    of the rest (60/20/20 by default) with the same seed."""
    strata = raw.y.cat.codes.to_numpy() if raw.task == "classification" else None
    rows = np.arange(len(raw.y))

    def test_rows(strata: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if split.rows is not None:
            return split.rows
        if split.folds is None:
            return train_test_split(rows, test_size=settings.test_fraction, random_state=split.seed, stratify=strata)
        if strata is None:
            kfold = KFold(split.folds, shuffle=True, random_state=split.seed)
        else:
            kfold = StratifiedKFold(split.folds, shuffle=True, random_state=split.seed)
        with warnings.catch_warnings():  # a class with fewer rows than folds: a fold without it
            warnings.simplefilter("error", UserWarning)
            return list(kfold.split(rows, strata))[split.fold]  # type: ignore[index]

    def train_val_test(strata: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rest, test = test_rows(strata)
        val_size = settings.val_fraction / (1 - settings.test_fraction)
        train, val = train_test_split(
            rest, test_size=val_size, random_state=split.seed, stratify=None if strata is None else strata[rest]
        )
        return train, val, test

    unstratified = ["a class is too small to stratify on: the splits are not stratified"]
    attempts = [(None, [])] if strata is None else [(strata, []), (None, unstratified)]
    for strata, notes in attempts:
        try:
            return (*train_val_test(strata), notes)
        except (ValueError, UserWarning) as exc:
            error = exc
    raise UserError(f"{raw.label} cannot be split into training, validation and test rows ({one_line(error)})")


def prepare(
    raw: RawDataset,
    seed: int,
    settings: PrepSettings = PrepSettings(),
    *,
    fold: int | None = None,
    folds: int | None = None,
    task: tuple[int, np.ndarray, np.ndarray] | None = None,
) -> Prepared:
    """Split with `seed` (the holdout split, or with `folds` that fold of the seed's K-fold, or with
    `task` (its ID, training and test rows) that task's split); impute, standardise and one-hot
    encode, fitted on the training split."""
    if task is not None:
        _check_task_rows(raw, *task)
    split = Split(seed, fold, folds, None if task is None else task[1:])
    train, val, test, notes = _split(raw, split, settings)
    numeric = [c for c in raw.X.columns if c not in raw.categorical]
    encoder = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist",
                        max_categories=settings.max_categories,
                        sparse_output=False,
                        feature_name_combiner=lambda column, level: f"{column}={level}",
                    ),
                ),
                raw.categorical,
            ),
        ],
        verbose_feature_names_out=False,
    )
    # Categorical columns as objects with NaN for missing values: what the imputer and the encoder take.
    X = raw.X.astype(dict.fromkeys(raw.categorical, object))
    X[raw.categorical] = X[raw.categorical].where(X[raw.categorical].notna(), np.nan)
    encoder.fit(X.iloc[train])
    x_train, x_val, x_test = (
        np.ascontiguousarray(encoder.transform(X.iloc[rows]), dtype=np.float32) for rows in (train, val, test)
    )
    feature_names = [str(name) for name in encoder.get_feature_names_out()]
    onehot_groups = _onehot_groups(encoder)
    notes = raw.notes + notes
    unfitted = [c for c in numeric if c not in feature_names]
    if unfitted:
        notes.append(f"dropped {len(unfitted)} column(s) with no value in the training split: {', '.join(unfitted)}")

    if raw.task == "classification":
        labels = raw.y.cat.codes.to_numpy().astype(np.int64)
        y_train, y_val, y_test = labels[train], labels[val], labels[test]
        y_mean, y_std = 0.0, 1.0
    else:
        values = raw.y.to_numpy(dtype=np.float64)
        y_mean, y_std = float(values[train].mean()), float(values[train].std()) or 1.0
        y_train, y_val, y_test = (((values[rows] - y_mean) / y_std).astype(np.float32) for rows in (train, val, test))

    return Prepared(
        dataset_id=raw.dataset_id,
        name=raw.name,
        task=raw.task,
        target=raw.target,
        seed=split.seed,
        fold=split.fold,
        folds=split.folds,
        task_id=None if task is None else task[0],
        n_classes=raw.n_classes,
        class_names=raw.class_names,
        feature_names=feature_names,
        x_train=x_train,
        x_val=x_val,
        x_test=x_test,
        y_train=y_train,
        y_val=y_val,
        y_test=y_test,
        y_mean=y_mean,
        y_std=y_std,
        checksum=raw.checksum,
        notes=notes,
        onehot_groups=onehot_groups,
    )


def _check_task_rows(raw: RawDataset, task_id: int, train: np.ndarray, test: np.ndarray) -> None:
    """A task's row indices are the dataset's rows as OpenML numbers them: all of them must still be
    there, in order (no row dropped for a missing target), and the two parts must not overlap."""
    if any(note.startswith("dropped") and "rows without a target" in note for note in raw.notes):
        raise UserError(f"OpenML task {task_id}: {raw.label} lost rows without a target: its split rows do not apply")
    if len(np.intersect1d(train, test)) or max(train.max(initial=0), test.max(initial=0)) >= len(raw.y):
        raise UserError(f"OpenML task {task_id}: its split does not fit {raw.label} ({len(raw.y)} rows)")


def _onehot_groups(encoder: ColumnTransformer) -> list[list[int]]:
    """The output columns of each categorical input column, from the fitted encoder: the one-hot
    encoder names its outputs ``<input>=<level>``, so named with the inputs' positions its outputs
    tell which input each comes from."""
    columns = encoder.output_indices_["categorical"]
    if columns.stop == columns.start:
        return []
    onehot = encoder.named_transformers_["categorical"][-1]
    positions = [str(i) for i in range(onehot.n_features_in_)]
    owners = [name.split("=", 1)[0] for name in onehot.get_feature_names_out(positions)]
    groups: dict[str, list[int]] = {}
    for offset, owner in enumerate(owners):
        groups.setdefault(owner, []).append(columns.start + offset)
    return list(groups.values())


def get_prepared(
    dataset_id: int,
    seed: int,
    *,
    target: str | None = None,
    cache: OpenMLCache | None = None,
    settings: PrepSettings = PrepSettings(),
    fold: int | None = None,
    folds: int | None = None,
    task: int | None = None,
) -> Prepared:
    """`prepare(load_dataset(...), seed, settings, fold=fold, folds=folds)`, cached on disk under the
    OpenML cache. With `task` (an OpenML task's ID), the split is that task's (repeat `seed`, `fold`
    of its `folds`), read from its cached split file (``tasks.py``).

    The key is the dataset, the checksums of its data file and description, the target, the seed
    (and with folds, the fold and their number), the settings and the preparation's version; a hit
    returns bit-identical arrays without importing openml or parsing the data. The holdout split's
    key is what it was before folds existed.
    """
    split = Split(seed, fold, folds)
    cache = cache or OpenMLCache.resolve()
    if task is not None:
        from distillbench.datasets.tasks import load_task

        splits_sha256 = load_task(task, cache).splits_sha256
    data_file = cache.data_file(dataset_id)
    key = {
        "dataset_id": dataset_id,
        "checksum": file_sha256(data_file),
        "description": file_sha256(data_file.with_name("description.xml")),
        "target": target,
        "seed": seed,
        "settings": dataclasses.asdict(settings),
        "version": [PREP_VERSION, sklearn.__version__, np.__version__],
        **({} if folds is None else {"fold": fold, "folds": folds}),
        **({} if task is None else {"task": task, "splits": splits_sha256}),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    stem = (
        f"{dataset_id}-seed{seed}"
        + ("" if folds is None else f"-fold{fold}of{folds}")
        + ("" if task is None else f"-task{task}")
    )
    path = cache.root / "distillbench-prepared" / f"{stem}-{digest}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return Prepared(**json.loads(str(stored["meta"])), **{name: stored[name] for name in ARRAYS})
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error) as exc:
            logger.warning(
                "dataset %d %s: the prepared arrays %s do not load (%s); preparing them again",
                dataset_id,
                split,
                path,
                one_line(exc),
            )
            path.unlink(missing_ok=True)

    rows = None
    if task is not None:
        from distillbench.datasets.tasks import task_split

        rows = (task, *task_split(task, seed, fold or 0, cache))
    raw = load_dataset(dataset_id, target=target, cache=cache)
    prepared = prepare(raw, seed, settings, fold=fold, folds=folds, task=rows)
    meta = {f.name: getattr(prepared, f.name) for f in dataclasses.fields(prepared) if f.name not in ARRAYS}
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as partial, open(partial, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), **{name: getattr(prepared, name) for name in ARRAYS})
    return prepared
