"""Datasets that ship inside an installed package, written as an OpenML cache: the offline fallback.

scikit-learn's wheel bundles a few small datasets (no download). This module writes three of them,
plus one seeded synthetic regression dataset, as an OpenML cache folder in the layout openml-python
0.15 reads (``org/openml/www/datasets/<ID>/{description,features,qualities}.xml, dataset.arff``),
so that they go through exactly the code path of every other dataset: the real ``openml`` package
reading a cache, this folder being the read-only *source* of an ``OpenMLCache``.

IDs: from ``PRIVATE_ID_START`` (990000000) up, IDs are distillbench-private: they name data made on
this machine, never an OpenML dataset (OpenML's IDs are far below), so that a result can never be
mistaken for one on OpenML data. Each description.xml says where its data came from and the
scikit-learn version.

Where: ``<OpenML cache>/distillbench-builtin/`` (beside ``distillbench-prepared/``), written
atomically (built in a temporary folder, then renamed) and regenerated when it is missing,
incomplete or from another scikit-learn or generator version. Generation is deterministic: the same
versions give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from xml.sax.saxutils import escape

from distillbench.datasets.sources import DATASETS_SUBDIR, ENTRY_FILES, one_line
from distillbench.errors import UserError

PRIVATE_ID_START = 990_000_000
FOLDER = "distillbench-builtin"
GENERATOR_VERSION = 1  # bump when the files written change
MANIFEST = "MANIFEST.json"
OPENML = "openml"  # the `dataset_source` of every other dataset


@dataclass(frozen=True)
class Builtin:
    dataset_id: int
    name: str
    origin: str  # a record's `dataset_source`
    call: str  # the scikit-learn call the data comes from
    target: str
    summary: str
    doc: str  # the scikit-learn documentation page


BUNDLED = "scikit-learn bundled"
_DOCS = "https://scikit-learn.org/stable/modules/generated/sklearn.datasets."
BUILTINS = (
    Builtin(
        990_000_001,
        "breast_cancer",
        BUNDLED,
        "sklearn.datasets.load_breast_cancer()",
        "diagnosis",
        "Breast Cancer Wisconsin (Diagnostic): 569 rows, 30 numeric features, 2 classes",
        _DOCS + "load_breast_cancer.html",
    ),
    Builtin(
        990_000_002,
        "digits",
        BUNDLED,
        "sklearn.datasets.load_digits()",
        "digit",
        "optical recognition of handwritten digits, 8x8 images: 1,797 rows, 64 numeric features, 10 classes",
        _DOCS + "load_digits.html",
    ),
    Builtin(
        990_000_003,
        "diabetes",
        BUNDLED,
        "sklearn.datasets.load_diabetes(scaled=False)",
        "progression",
        "diabetes (Efron et al. 2004), unscaled: 442 rows, 10 numeric features, regression "
        "(disease progression after one year)",
        _DOCS + "load_diabetes.html",
    ),
    Builtin(
        990_000_004,
        "friedman1_synthetic",
        "synthetic (scikit-learn make_friedman1, random_state=0)",
        "sklearn.datasets.make_friedman1(n_samples=1000, n_features=10, noise=1.0, random_state=0)",
        "y",
        "SYNTHETIC: Friedman #1 regression problem, generated with a fixed seed: 1,000 rows, 10 numeric "
        "features (5 informative, 5 noise), regression",
        _DOCS + "make_friedman1.html",
    ),
)
BY_ID = {b.dataset_id: b for b in BUILTINS}


def is_builtin(dataset_id: int) -> bool:
    return dataset_id in BY_ID


def dataset_source(dataset_id: int) -> str:
    """Where a dataset's data comes from, for the records: 'openml', or the builtin dataset's origin."""
    return BY_ID[dataset_id].origin if dataset_id in BY_ID else OPENML


def builtin_folder(cache_root: Path) -> Path:
    return Path(cache_root) / FOLDER


def _stamp() -> dict:
    return {"generator_version": GENERATOR_VERSION, "scikit-learn": version("scikit-learn")}


def ensure_builtin_source(cache_root: Path) -> Path:
    """The builtin OpenML cache under `cache_root`, written first if missing, incomplete or stale."""
    folder = builtin_folder(cache_root)
    if _complete(folder):
        return folder
    partial = folder.with_name(f".{FOLDER}.{os.getpid()}.partial")
    try:
        shutil.rmtree(partial, ignore_errors=True)
        write_builtin_source(partial)
        if _complete(folder):  # another process wrote it meanwhile
            return folder
        if folder.exists():  # incomplete or stale: moved aside, then removed
            old = folder.with_name(f".{FOLDER}.{os.getpid()}.old")
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        for builtin in BUILTINS:  # copies of an older version in the writable cache: staged again from this one
            shutil.rmtree(Path(cache_root) / DATASETS_SUBDIR / str(builtin.dataset_id), ignore_errors=True)
        try:
            partial.rename(folder)
        except OSError:
            if not _complete(folder):  # another process won the race only if it left a complete folder
                raise
    except OSError as exc:
        raise UserError(
            f"cannot write the builtin datasets into {folder} ({one_line(exc)}); "
            "choose another OpenML cache with --cache or OPENML_CACHE_DIR"
        ) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def _complete(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("stamp") == _stamp() and all(
        (folder / DATASETS_SUBDIR / str(b.dataset_id) / name).is_file() for b in BUILTINS for name in ENTRY_FILES
    )


def write_builtin_source(folder: Path) -> None:
    """Write every builtin dataset as an OpenML cache entry under `folder`, then its MANIFEST.json."""
    entries = []
    for builtin in BUILTINS:
        entry = folder / DATASETS_SUBDIR / str(builtin.dataset_id)
        entry.mkdir(parents=True, exist_ok=True)
        files = _entry_files(builtin)
        for name in ENTRY_FILES:
            (entry / name).write_bytes(files[name].encode("utf-8"))
        entries.append(
            {
                "id": builtin.dataset_id,
                "name": builtin.name,
                "source": builtin.origin,
                "call": builtin.call,
                "target": builtin.target,
                "sha256": hashlib.sha256(files["dataset.arff"].encode()).hexdigest(),
            }
        )
    manifest = {
        "what": "distillbench's builtin datasets as an OpenML cache (see distillbench/datasets/builtin.py)",
        "stamp": _stamp(),
        "datasets": entries,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


# ---- the data, and its four files


def _load(builtin: Builtin) -> tuple[list[str], list[list[float]], list, list[str]]:
    """Feature names, rows of features, target values (floats, or class names), class names ([] for regression)."""
    from sklearn import datasets

    loaders: dict[str, Callable] = {
        "breast_cancer": datasets.load_breast_cancer,
        "digits": datasets.load_digits,
        "diabetes": lambda: datasets.load_diabetes(scaled=False),
    }
    if builtin.name == "friedman1_synthetic":
        x, y = datasets.make_friedman1(n_samples=1000, n_features=10, noise=1.0, random_state=0)
        return [f"x{i}" for i in range(x.shape[1])], x.tolist(), y.tolist(), []
    bunch = loaders[builtin.name]()
    names = [str(n).replace(" ", "_") for n in bunch.feature_names]
    if builtin.name == "diabetes":
        return names, bunch.data.tolist(), bunch.target.tolist(), []
    classes = [str(c) for c in bunch.target_names]
    return names, bunch.data.tolist(), [classes[int(i)] for i in bunch.target], classes


def _number(value: float) -> str:
    """The shortest text that reads back as the same float64 ('3' for 3.0)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _description(builtin: Builtin, sklearn_version: str) -> str:
    return (
        f"distillbench builtin dataset {builtin.dataset_id} ({builtin.name}): {builtin.summary}. "
        f"Generated by distillbench (datasets/builtin.py, generator version {GENERATOR_VERSION}) from "
        + ("the copy bundled with" if builtin.origin == BUNDLED else "data generated by")
        + f" scikit-learn {sklearn_version}: {builtin.call}; not downloaded from OpenML. IDs from "
        f"{PRIVATE_ID_START} up are distillbench-private: this is not OpenML dataset {builtin.dataset_id}, "
        "and OpenML's copies of this data, where there are any, can differ from it."
    )


def _entry_files(builtin: Builtin) -> dict[str, str]:
    import sklearn

    names, rows, target, classes = _load(builtin)
    description = _description(builtin, sklearn.__version__)
    target_type = "{" + ",".join(classes) + "}" if classes else "NUMERIC"
    lines = [f"% {description}", f"@RELATION {builtin.name}", ""]
    lines += [f"@ATTRIBUTE {name} NUMERIC" for name in names] + [
        f"@ATTRIBUTE {builtin.target} {target_type}",
        "",
        "@DATA",
    ]
    for row, label in zip(rows, target, strict=True):
        lines.append(",".join(map(_number, row)) + "," + (label if classes else _number(label)))
    arff = "\n".join(lines) + "\n"

    oml = 'xmlns:oml="http://openml.org/openml"'
    description_xml = (
        "\n".join(
            [
                f"<oml:data_set_description {oml}>",
                f"  <oml:id>{builtin.dataset_id}</oml:id>",
                f"  <oml:name>{builtin.name}</oml:name>",
                "  <oml:version>1</oml:version>",
                f"  <oml:description>{escape(description)}</oml:description>",
                "  <oml:format>ARFF</oml:format>",
                "  <oml:licence>BSD-3-Clause (scikit-learn)</oml:licence>",
                f"  <oml:url>{escape(builtin.doc)}</oml:url>",
                f"  <oml:default_target_attribute>{builtin.target}</oml:default_target_attribute>",
                "  <oml:visibility>private</oml:visibility>",
                "  <oml:status>active</oml:status>",
                f"  <oml:md5_checksum>{hashlib.md5(arff.encode()).hexdigest()}</oml:md5_checksum>",
                "</oml:data_set_description>",
            ]
        )
        + "\n"
    )

    features = [f"<oml:data_features {oml}>"]
    for index, name in enumerate([*names, builtin.target]):
        is_target = index == len(names)
        features += [
            "  <oml:feature>",
            f"    <oml:index>{index}</oml:index>",
            f"    <oml:name>{name}</oml:name>",
            f"    <oml:data_type>{'nominal' if is_target and classes else 'numeric'}</oml:data_type>",
        ]
        features += [f"    <oml:nominal_value>{c}</oml:nominal_value>" for c in (classes if is_target else [])]
        features += [
            f"    <oml:is_target>{str(is_target).lower()}</oml:is_target>",
            "    <oml:is_ignore>false</oml:is_ignore>",
            "    <oml:is_row_identifier>false</oml:is_row_identifier>",
            "    <oml:number_of_missing_values>0</oml:number_of_missing_values>",
            "  </oml:feature>",
        ]
    features_xml = "\n".join([*features, "</oml:data_features>"]) + "\n"

    counts = [target.count(c) for c in classes]
    qualities = {
        "NumberOfInstances": len(rows),
        "NumberOfFeatures": len(names) + 1,
        "NumberOfMissingValues": 0,
        "NumberOfInstancesWithMissingValues": 0,
        "NumberOfNumericFeatures": len(names) + (0 if classes else 1),
        "NumberOfSymbolicFeatures": 1 if classes else 0,
        "NumberOfClasses": len(classes),
    }
    if classes:
        qualities.update(MajorityClassSize=max(counts), MinorityClassSize=min(counts))
    qualities_xml = (
        "\n".join(
            [
                f"<oml:data_qualities {oml}>",
                *(
                    f"  <oml:quality><oml:name>{k}</oml:name><oml:value>{v}</oml:value></oml:quality>"
                    for k, v in qualities.items()
                ),
                "</oml:data_qualities>",
            ]
        )
        + "\n"
    )
    return {
        "description.xml": description_xml,
        "features.xml": features_xml,
        "qualities.xml": qualities_xml,
        "dataset.arff": arff,
    }
