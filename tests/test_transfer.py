"""Transfer sets: the generators (seeded, sized, one-hot groups kept one-hot, MUNGE's neighbours,
mixup's segments, Gaussian noise), the rows that keep their labels, and how the pipeline hands a
transfer set to the distilled student only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from distillbench.implementations import transfer
from distillbench.implementations.compressors import fit_compressor
from distillbench.implementations.parity import synthetic_problem
from distillbench.implementations.pipeline import Data, Pipeline, initial_weights, step_budget_for_rows
from distillbench.implementations.spec import (
    GENERATORS,
    DistillSpec,
    MLPSpec,
    TrainingSpec,
    TransferSpec,
    spec_from_dict,
)

GROUPS = [[2, 3, 4], [5, 6]]  # two categorical columns, one-hot, after two numeric ones


def mixed_rows(n: int = 200, seed: int = 0) -> np.ndarray:
    """Standardised numeric columns 0-1 and two one-hot groups (columns 2-4 and 5-6)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 7), np.float32)
    x[:, :2] = rng.normal(size=(n, 2))
    x[np.arange(n), 2 + rng.integers(0, 3, n)] = 1.0
    x[np.arange(n), 5 + rng.integers(0, 2, n)] = 1.0
    return x


def spec(kind: str, **fields) -> TransferSpec:
    made = TransferSpec(kind=kind, **fields)
    made.validate()
    return made


def assert_one_hot(rows: np.ndarray, groups) -> None:
    for group in groups:
        block = rows[:, group]
        assert set(np.unique(block)) <= {0.0, 1.0} and (block.sum(axis=1) == 1).all(), group


@pytest.mark.parametrize("kind", GENERATORS)
def test_same_seed_same_rows_other_seed_other_rows(kind):
    x = mixed_rows()
    first, again = (transfer.generate(spec(kind), x, GROUPS, seed=5) for _ in range(2))
    other = transfer.generate(spec(kind), x, GROUPS, seed=6)
    assert first.tobytes() == again.tobytes()
    assert first.shape == other.shape and not np.array_equal(first, other)


@pytest.mark.parametrize("kind", GENERATORS)
@pytest.mark.parametrize("size", [0.0, 0.5, 1.0, 2.5, 4.0])
def test_a_set_has_size_times_the_training_rows(kind, size):
    x = mixed_rows(n=60)
    rows = transfer.generate(spec(kind, size=size), x, GROUPS, seed=0)
    assert rows.shape == (round(size * 60), 7) and rows.dtype == np.float32 and rows.flags.c_contiguous
    assert np.isfinite(rows).all()


def test_each_pass_starts_from_every_training_row_once():
    base = transfer.base_rows(10, 25, np.random.default_rng(0))
    assert len(base) == 25
    assert sorted(base[:10]) == list(range(10)) == sorted(base[10:20]) and len(set(base[20:])) == 5


@pytest.mark.parametrize("kind", ["munge", "gaussian"])
def test_one_hot_groups_stay_one_hot(kind):
    x = mixed_rows()
    big = {"munge": {"p": 1.0, "s": 0.5}, "gaussian": {"noise_sd": 3.0}}[kind]  # every attribute moves
    for fields in ({}, big):
        rows = transfer.generate(spec(kind, size=4.0, **fields), x, GROUPS, seed=1)
        assert_one_hot(rows, GROUPS)


@pytest.mark.slow
def test_one_hot_groups_of_a_real_dataset_stay_one_hot(openml_cache):
    from distillbench.datasets.load import load_dataset
    from distillbench.datasets.prepare import prepare

    p = prepare(load_dataset(31, cache=openml_cache), seed=0)  # credit-g: 7 numeric, 13 categorical columns
    for kind in ("munge", "gaussian"):
        rows = transfer.generate(spec(kind), p.x_train, p.onehot_groups, seed=0)
        assert rows.shape == p.x_train.shape
        assert_one_hot(rows, p.onehot_groups)


@pytest.mark.parametrize("zeros", [0, transfer.KD_TREE_MAX_COLUMNS], ids=["k-d tree", "brute force"])
def test_nearest_neighbours_on_a_hand_made_example(zeros):
    def found(x):  # with columns of zeros, which change no distance but the search used
        return transfer.nearest_neighbours(np.pad(x, ((0, 0), (0, zeros)))).tolist()

    # On a line: 0, 1, 3, 7, 7.5 and a duplicate of 20 (whose nearest other row is its twin).
    x = np.array([[0.0], [1.0], [3.0], [7.0], [7.5], [20.0], [20.0]])
    assert found(x) == [1, 0, 1, 4, 3, 6, 5]
    # In two dimensions, Euclidean: (0, 0)'s nearest is (1, 1) (distance 1.41), not (0, 1.5) or (2, 0).
    x = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.5], [2.0, 0.0]])
    assert found(x) == [1, 2, 1, 1]
    assert found(x[:1]) == [0]  # alone: itself


def test_brute_force_finds_the_nearest_other_row_across_blocks():
    # More rows than one block of rows or of candidates, with duplicates; scipy's k-d tree (an
    # independent search) gives each row's distance to its nearest other row.
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(3)
    x = rng.normal(size=(2 * transfer.BLOCK_CANDIDATES + 77, 20))
    x[1::500] = x[::500]  # twins: each one's nearest other row is at distance 0
    found = transfer.brute_force_neighbours(x)
    assert (found != np.arange(len(x))).all()
    expected = cKDTree(x).query(x, k=2)[0][:, 1]
    assert np.allclose(np.linalg.norm(x - x[found], axis=1), expected, rtol=1e-12, atol=1e-12)
    assert (found[1::500] == np.arange(0, len(x), 500)[: len(found[1::500])]).all()


def test_munge_takes_attributes_from_the_nearest_neighbour():
    # Two well separated pairs: each row's neighbour is its partner.
    x = np.array(
        [[0.0, 0.0, 1.0, 0.0], [1.0, 10.0, 0.0, 1.0], [100.0, 100.0, 1.0, 0.0], [101.0, 90.0, 0.0, 1.0]], np.float32
    )
    groups = [[2, 3]]
    base = np.arange(4)
    rng = np.random.default_rng(0)
    assert np.array_equal(transfer.munge(x, groups, base, 0.0, 1.0, rng), x)  # p = 0: the rows themselves
    # p = 1 and a tiny spread: every attribute is the neighbour's (continuous ones up to 1e-6).
    swapped = transfer.munge(x, groups, base, 1.0, 1e9, rng)
    assert np.allclose(swapped, x[[1, 0, 3, 2]], atol=1e-6)
    assert np.array_equal(swapped[:, 2:], x[[1, 0, 3, 2], 2:])  # the group moves as a whole


def test_munge_swaps_with_probability_p_and_draws_with_sd_distance_over_s():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 3))
    neighbour = x[transfer.nearest_neighbours(x)]
    base = np.repeat(np.arange(400), 50)  # 50 draws from every row
    a, b = x[base], neighbour[base]
    out = transfer.munge(x, [], base, 0.3, 2.0, np.random.default_rng(5))
    swapped = out != a
    assert swapped.mean() == pytest.approx(0.3, abs=0.01)
    z = (out[swapped] - b[swapped]) / (np.abs(a - b)[swapped] / 2.0)  # standard normal if sd = |a - b| / s
    assert z.mean() == pytest.approx(0.0, abs=0.02) and z.std() == pytest.approx(1.0, abs=0.02)


def test_mixup_rows_lie_on_segments_between_pairs_of_training_rows():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 12)).astype(np.float32)  # independent rows: each point has one decomposition
    base = transfer.base_rows(12, 48, np.random.default_rng(3))
    rows = transfer.mixup(x, base, 0.5, rng)
    weights = np.linalg.solve(x.T.astype(np.float64), rows.T).T  # rows = weights @ x
    assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    assert (weights > -1e-5).all()
    assert ((np.abs(weights) > 1e-5).sum(axis=1) <= 2).all()  # two rows at most
    assert (weights[np.arange(48), base] > 1e-5).all()  # one of them the row it started from


def test_gaussian_noise_has_the_stated_sd_and_zero_noise_copies_the_rows():
    x = mixed_rows(n=500)
    rng = np.random.default_rng([0, 3000])
    base = transfer.base_rows(len(x), 2000, rng)
    assert np.array_equal(transfer.gaussian(x, GROUPS, base, 0.0, rng), x[base])
    noisy = transfer.gaussian(x, GROUPS, base, 0.25, np.random.default_rng(1))
    assert (noisy[:, :2] - x[base, :2]).std() == pytest.approx(0.25, rel=0.05)
    assert_one_hot(noisy, GROUPS)
    kept = (noisy[:, 2:5] == x[base, 2:5]).all(axis=1).mean()
    assert 0.9 < kept < 1.0  # small noise: most rows keep their category, some do not


def test_labelled_rows_are_a_seeded_fraction():
    keep = transfer.labelled_rows(1000, 0.1, seed=3)
    assert keep.dtype == bool and keep.sum() == 100
    assert np.array_equal(keep, transfer.labelled_rows(1000, 0.1, seed=3))
    assert not np.array_equal(keep, transfer.labelled_rows(1000, 0.1, seed=4))
    assert transfer.labelled_rows(10, 0.01, seed=0).sum() == 1  # at least one


# --- the pipeline: what the distilled student gets ------------------------------------------------


def pipeline_for(transfer_fields: dict, task: str = "multiclass", training=None) -> tuple[Pipeline, object]:
    """A pipeline on a small problem and a teacher: an untrained torch MLP (its outputs are all
    that labelling a transfer set needs)."""
    from distillbench.implementations.frameworks import get_backend

    kind, n_classes, x, y = synthetic_problem(task, 300, 7, 0)
    data = Data(kind, n_classes, x[:200], y[:200], x[200:], y[200:], onehot_groups=[])
    training = training or {"epochs": 3}
    config = spec_from_dict({"transfer": transfer_fields, "student": {"widths": [4]}, "training": training})
    backend = get_backend("torch")
    teacher = backend.build(MLPSpec(widths=[8]), initial_weights(MLPSpec(widths=[8]), 7, n_classes or 1, 0, "teacher"))
    return Pipeline(backend, config, data, seed=0), teacher


def test_unlabeled_keeps_labels_on_a_fraction_and_gives_the_rest_to_the_distilled_student():
    pipeline, teacher = pipeline_for({"kind": "unlabeled", "labelled_fraction": 0.25})
    _, _, x, _ = synthetic_problem("multiclass", 300, 7, 0)
    assert len(pipeline.data.x_train) == 50  # the teacher and both students train on these
    compressor = fit_compressor("classification", DistillSpec(temperature=2.0), None, None)
    extra = pipeline.transfer_set(teacher, compressor)
    assert extra.kind == "unlabeled" and extra.x.shape == (150, 7) and extra.targets.shape == (150, 4)
    together = np.concatenate([pipeline.data.x_train, extra.x])
    assert sorted(map(bytes, together)) == sorted(map(bytes, x[:200]))  # disjoint, and every training row
    assert np.allclose(extra.targets.sum(axis=1), 1.0)
    assert extra.generate_seconds >= 0 and extra.label_seconds >= 0


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_generated_rows_are_labelled_through_the_compressor(task):
    pipeline, teacher = pipeline_for({"kind": "mixup", "size": 2.0}, task)
    if task == "multiclass":  # the hard labels' own targets
        compressor = fit_compressor("classification", DistillSpec(objective="hard_labels"), None, None)
    else:  # an affine map fitted to 2 t + 1
        compressor = fit_compressor("regression", DistillSpec(), np.arange(4.0), 2 * np.arange(4.0) + 1)
    extra = pipeline.transfer_set(teacher, compressor)
    assert extra.x.shape == (400, 7)
    assert np.array_equal(extra.x, transfer.generate(pipeline.spec.transfer, pipeline.data.x_train, [], 0))
    assert np.array_equal(extra.targets, compressor.apply(pipeline.outputs(teacher, extra.x)))


@pytest.mark.parametrize("fields", [{}, {"kind": "munge", "size": 0}])
def test_no_transfer_set_gives_no_rows(fields):
    pipeline, teacher = pipeline_for(fields)
    extra = pipeline.transfer_set(teacher, fit_compressor("classification", DistillSpec(), None, None))
    assert extra.x.shape == (0, 7) and extra.targets.shape == (0, 4) and len(pipeline.data.x_train) == 200


@pytest.mark.slow
def test_the_distilled_student_trains_on_its_transfer_rows_and_the_scratch_student_does_not():
    from distillbench.implementations.frameworks import get_backend

    kind, n_classes, x, y = synthetic_problem("multiclass", 300, 7, 0)
    data = Data(kind, n_classes, x[:200], y[:200], x[200:], y[200:])
    base = {"teacher": {"widths": [16]}, "student": {"widths": [4]}, "training": {"epochs": 3}}
    backend = get_backend("torch")
    results = {}
    for fields in ({}, {"kind": "gaussian", "size": 1.0}):
        backend.configure(0)
        pipeline = Pipeline(backend, spec_from_dict(base | {"transfer": fields}), data, seed=0)
        teacher, _ = pipeline.fit_teacher()
        compressor, t_train, t_val = pipeline.compress(teacher)
        extra = pipeline.transfer_set(teacher, compressor)
        student, _ = pipeline.fit_student_kd(t_train, t_val, extra)
        scratch, _ = pipeline.fit_student_scratch()
        results[bool(fields)] = backend.get_weights(student), backend.get_weights(scratch), len(extra.x)
    assert results[True][2] == 200 and results[False][2] == 0
    assert not all(np.array_equal(a, b) for a, b in zip(results[True][0], results[False][0]))  # the student saw them
    assert all(np.array_equal(a, b) for a, b in zip(results[True][1], results[False][1]))  # the scratch student did not


def test_the_step_budget_grows_with_the_transfer_rows_so_the_epochs_do_not_shrink():
    # 200 labelled rows and 300 transfer rows: 2.5x the rows per epoch, so 2.5x the steps (10 -> 25).
    assert step_budget_for_rows(TrainingSpec(max_steps=10), 500, 200).max_steps == 25
    assert step_budget_for_rows(TrainingSpec(max_steps=10), 201, 200).max_steps == 11  # rounded up
    assert step_budget_for_rows(TrainingSpec(max_steps=10), 200, 200) == TrainingSpec(max_steps=10)
    pipeline, teacher = pipeline_for({"kind": "mixup", "size": 1.5}, training={"max_steps": 10, "patience": 100})
    compressor, t_train, t_val = pipeline.compress(teacher)
    _, kd = pipeline.fit_student_kd(t_train, t_val, pipeline.transfer_set(teacher, compressor))
    _, scratch = pipeline.fit_student_scratch()
    assert (kd.stop_reason, kd.steps, scratch.stop_reason, scratch.steps) == ("max_steps", 25, "max_steps", 10)


def test_transfer_spec_defaults_and_the_fields_each_kind_uses():
    assert TransferSpec().kind == "none"
    assert set(TransferSpec.USED_BY) == {f.name for f in dataclasses.fields(TransferSpec)} - {"kind"}
