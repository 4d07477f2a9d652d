"""Suites as data: the shipped suite files and the errors for bad ones."""

from __future__ import annotations

import json

import pytest

from distillbench.datasets.suites import Suite, SuiteEntry, list_suites, load_suite
from distillbench.errors import UserError


def test_shipped_suites_parse() -> None:
    assert set(list_suites()) >= {"smoke", "quick", "standard", "cc18", "ctr23", "grinsztajn"}
    for name in list_suites():
        suite = load_suite(name)
        assert suite.name == name and suite.description and suite.entries


@pytest.mark.parametrize(
    "name, size", [("smoke", 2), ("quick", 4), ("standard", 21), ("cc18", 72), ("ctr23", 35), ("grinsztajn", 59)]
)
def test_suite_sizes(name: str, size: int) -> None:
    ids = [entry.dataset_id for entry in load_suite(name).entries]
    assert len(ids) == len(set(ids)) == size


def test_standard_is_the_shared_cache_and_small_suites_are_part_of_it(openml_source) -> None:
    manifest = {entry["id"]: entry for entry in json.loads((openml_source / "MANIFEST.json").read_text())}
    assert {entry.dataset_id for entry in load_suite("standard").entries} == set(manifest)
    for name, most_rows in [("smoke", 1000), ("quick", 5000)]:
        tasks = [manifest[entry.dataset_id]["task"] for entry in load_suite(name).entries]
        assert sorted(tasks) == sorted(["classification", "regression"] * (len(tasks) // 2))
        assert all(manifest[entry.dataset_id]["rows"] <= most_rows for entry in load_suite(name).entries)


def test_suite_file_forms(tmp_path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'description = "two"\ndatasets = [61, { id = 187, target = "Alcohol", note = "wine as regression" }]\n'
    )
    assert load_suite(str(path)) == Suite(
        name="mine",
        description="two",
        entries=[SuiteEntry(61), SuiteEntry(187, "Alcohol", "wine as regression")],
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("datasets = [61,", "does not parse"),
        ('description = "nothing"\n', "names no dataset"),
        ("datasets = []\n", "names no dataset"),
        ('datasets = ["iris"]\n', "bad dataset entry"),
        ("datasets = [{ id = 61, taget = 'class' }]\n", "bad dataset entry"),
        ("datasets = [0]\n", "bad dataset entry"),
        ("datasets = [61, 61]\n", "lists dataset 61 twice"),
    ],
)
def test_bad_suite_files(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as error:
        load_suite(str(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_unknown_suite_and_missing_file(tmp_path) -> None:
    with pytest.raises(UserError, match=r"unknown suite 'nope': choose one of .*smoke"):
        load_suite("nope")
    with pytest.raises(UserError, match="cannot be read"):
        load_suite(str(tmp_path / "absent.toml"))
