"""Stage 2: each compressor's output, checked against its definition (numpy/scipy, no framework)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import softmax as scipy_softmax

from distillbench.implementations.compressors import COMPRESSORS, compressor_fields, fit_compressor
from distillbench.implementations.registry import ConfigError, ConfigField, Registry, merge_fields
from distillbench.implementations.spec import DistillSpec, spec_from_dict

N_ROWS = 200


def logits(n_classes: int, seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).normal(size=(N_ROWS, n_classes))).astype(np.float32)


def classification(kind: str, **distill) -> object:
    spec = DistillSpec(classification_compressor=kind, **distill)
    spec.validate()
    return fit_compressor("classification", spec, None, None)


def regression(kind: str, teacher_train: np.ndarray, y_train: np.ndarray, **distill) -> object:
    spec = DistillSpec(regression_compressor=kind, **distill)
    spec.validate()
    return fit_compressor("regression", spec, teacher_train, y_train)


# --- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_temperature_is_softmax_of_logits_over_t(n_classes, temperature):
    z = logits(n_classes)
    out = classification("temperature", temperature=temperature).apply(z)
    assert out.shape == z.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, scipy_softmax(z.astype(np.float64) / temperature, axis=1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)


def test_temperature_is_stable_for_large_logits():
    z = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]], dtype=np.float32)
    out = classification("temperature", temperature=1.0).apply(z)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, [[1, 0, 0], [0, 1, 0]], atol=1e-7)


def test_higher_temperature_is_softer():
    z = logits(5)
    sharp = classification("temperature", temperature=1.0).apply(z)
    soft = classification("temperature", temperature=4.0).apply(z)
    entropy = lambda p: -np.sum(p * np.log(p), axis=1)  # noqa: E731
    assert np.all(entropy(soft) > entropy(sharp))


@pytest.mark.parametrize(("n_classes", "k"), [(5, 1), (5, 2), (5, 3), (10, 4), (2, 1)])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_topk_keeps_exactly_the_k_largest_renormalised(n_classes, k, temperature):
    z = logits(n_classes)
    out = classification("topk", topk=k, temperature=temperature).apply(z)
    probs = scipy_softmax(z.astype(np.float64) / temperature, axis=1)
    assert np.all(np.count_nonzero(out, axis=1) == k)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    largest = np.argsort(-probs, axis=1)[:, :k]
    kept = np.zeros_like(probs, dtype=bool)
    np.put_along_axis(kept, largest, True, axis=1)
    assert np.array_equal(out > 0, kept)
    expected = np.where(kept, probs, 0.0)
    np.testing.assert_allclose(out, expected / expected.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("k", [5, 8])
def test_topk_with_k_at_least_classes_keeps_all(k):
    z = logits(5)
    out = classification("topk", topk=k, temperature=2.0).apply(z)
    np.testing.assert_allclose(out, scipy_softmax(z.astype(np.float64) / 2.0, axis=1), rtol=1e-6, atol=1e-7)
    assert np.all(out > 0)


@pytest.mark.parametrize("n_classes", [2, 3, 7])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_quantize_uses_at_most_2_to_the_bits_levels_and_rows_sum_to_one(n_classes, bits):
    z = logits(n_classes, scale=2.0)
    out = classification("quantize", bits=bits, temperature=2.0).apply(z)
    levels = 2**bits - 1
    assert len(np.unique(out)) <= 2**bits
    counts = out.astype(np.float64) * levels
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)  # every value is on the grid i / L
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(out >= 0)
    # a rounding of the probabilities: each entry within one grid step of the unquantised one
    probs = scipy_softmax(z.astype(np.float64) / 2.0, axis=1)
    assert np.all(np.abs(out - probs) < 1.0 / levels + 1e-6)


def test_quantize_with_one_bit_is_the_argmax_one_hot():
    z = logits(4)
    out = classification("quantize", bits=1, temperature=1.0).apply(z)
    np.testing.assert_array_equal(out, np.eye(4)[np.argmax(z, axis=1)])


def objective(name: str, task: str = "classification", **distill) -> object:
    spec = DistillSpec(objective=name, **distill)
    spec.validate()
    outputs = np.arange(3.0)  # regression's affine map is fitted on them (and used as labels)
    return fit_compressor(task, spec, outputs, outputs)


def test_logit_matching_passes_the_logits_through():
    z = logits(5)
    comp = objective("logit_matching", temperature=2.0)
    assert comp.kind == "logits"
    np.testing.assert_array_equal(comp.apply(z), z)


def test_hard_labels_is_the_one_hot_of_the_teachers_class():
    z = logits(5)
    z[0] = [1.0, 3.0, 3.0, 0.0, 0.0]  # a tie: the first of the largest
    out = objective("hard_labels").apply(z)
    np.testing.assert_array_equal(out, np.eye(5)[np.argmax(z, axis=1)])
    assert out[0].tolist() == [0, 1, 0, 0, 0] and out.dtype == np.float32


@pytest.mark.parametrize("name", ["logit_matching", "hard_labels"])
def test_regression_ignores_the_classification_objective(name):
    assert objective(name, "regression").kind == "affine"


# --- regression ----------------------------------------------------------------------------------


def test_identity_returns_teacher_outputs():
    t = np.random.default_rng(1).normal(size=N_ROWS).astype(np.float32)
    comp = regression("identity", t, t)
    out = comp.apply(t)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, t)


@pytest.mark.parametrize(("a", "b"), [(2.5, -0.7), (-0.3, 1.2), (1.0, 0.0)])
def test_affine_recovers_a_known_linear_map(a, b):
    t = np.random.default_rng(2).normal(size=N_ROWS)
    comp = regression("affine", t, a * t + b)
    assert comp.scale == pytest.approx(a, abs=1e-9)
    assert comp.offset == pytest.approx(b, abs=1e-9)
    t_new = np.linspace(-3, 3, 11)
    np.testing.assert_allclose(comp.apply(t_new), a * t_new + b, rtol=1e-6, atol=1e-6)


def test_affine_is_the_least_squares_fit_on_noisy_labels():
    rng = np.random.default_rng(3)
    t = rng.normal(size=N_ROWS)
    y = 0.8 * t + 0.2 + 0.5 * rng.normal(size=N_ROWS)
    comp = regression("affine", t, y)
    slope, intercept = np.polyfit(t, y, 1)
    assert comp.scale == pytest.approx(slope, rel=1e-9)
    assert comp.offset == pytest.approx(intercept, abs=1e-9)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_regression_quantize_uses_at_most_2_to_the_bits_levels_and_clips(bits):
    rng = np.random.default_rng(4)
    t_train = rng.normal(size=N_ROWS)
    comp = regression("quantize", t_train, t_train, bits=bits)
    low, high = t_train.min(), t_train.max()
    step = (high - low) / (2**bits - 1)

    out = comp.apply(t_train)
    assert len(np.unique(out)) <= 2**bits
    assert np.all(np.abs(out - t_train) <= step / 2 + 1e-5)  # snapped to the nearest level
    assert out.min() == pytest.approx(low, abs=1e-6) and out.max() == pytest.approx(high, abs=1e-6)

    outside = np.array([low - 10.0, low - 1e-3, high + 1e-3, high + 10.0])
    np.testing.assert_allclose(comp.apply(outside), [low, low, high, high], atol=1e-6)
    wide = comp.apply(rng.normal(scale=5.0, size=N_ROWS))
    assert len(np.unique(np.concatenate([out, wide]))) <= 2**bits
    assert wide.min() >= np.float32(low) and wide.max() <= np.float32(high)


def test_regression_quantize_of_constant_outputs_is_that_constant():
    t = np.full(10, 0.25)
    out = regression("quantize", t, t, bits=3).apply(np.array([0.25, -1.0, 2.0]))
    np.testing.assert_allclose(out, 0.25)


# --- the registry --------------------------------------------------------------------------------

# A fitted compressor's record (the distilled student's "compressor"), as records have always had it.
RECORDED = ["task", "kind", "temperature", "k", "bits", "scale", "offset", "low", "high"]
REGISTERED = [(task, name) for task, registry in COMPRESSORS.items() for name in registry]


def test_the_registered_compressors():
    assert REGISTERED == [
        ("classification", "temperature"),
        ("classification", "topk"),
        ("classification", "quantize"),
        ("regression", "identity"),
        ("regression", "affine"),
        ("regression", "quantize"),
    ]


@pytest.mark.parametrize(("task", "name"), REGISTERED)
def test_every_registered_compressor_is_a_config_choice_giving_float32_targets(task, name):
    """What every compressor promises, whatever it computes: the config takes its name, it fits to
    its kind, its targets are finite float32 of the outputs' shape (classification: probabilities,
    rows summing to 1), and its record starts with the fields records have always had."""
    spec = spec_from_dict({"distill": {f"{task}_compressor": name}}).distill
    rng = np.random.default_rng(6)
    if task == "classification":
        t, y = logits(4), rng.integers(0, 4, size=N_ROWS)
    else:
        t = rng.normal(size=N_ROWS)
        y = 0.5 * t + 0.1 * rng.normal(size=N_ROWS)
    compressor = fit_compressor(task, spec, t, y)
    assert (compressor.task, compressor.kind) == (task, name)
    out = compressor.apply(t)
    assert out.dtype == np.float32 and out.shape == t.shape and np.all(np.isfinite(out))
    if task == "classification":
        assert np.all(out >= 0)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    assert list(dataclasses.asdict(compressor))[: len(RECORDED)] == RECORDED


def test_an_unknown_compressor_is_refused_listing_the_registered_ones():
    with pytest.raises(
        ConfigError,
        match=r"^distill.regression_compressor: unknown compressor 'topk' "
        r"\(known: identity, affine, quantize\)$",
    ):
        spec_from_dict({"distill": {"regression_compressor": "topk"}})


def test_the_fields_compressors_declare_are_distill_fields_checked_by_their_rule():
    fields = compressor_fields()
    assert list(fields) == ["topk", "bits"]  # after the [distill] fields of spec.py, in this order
    assert [f.name for f in dataclasses.fields(DistillSpec)][-2:] == ["topk", "bits"]
    assert all(getattr(DistillSpec(), name) == declared.default for name, declared in fields.items())
    quantize = [COMPRESSORS[task]["quantize"].FIELDS["bits"] for task in ("classification", "regression")]
    assert quantize[0] is quantize[1]  # one field shared by the two quantize compressors
    with pytest.raises(ConfigError, match=r"^distill.topk: must be an integer >= 1, got 0$"):
        spec_from_dict({"distill": {"topk": 0}})
    with pytest.raises(ConfigError, match=r"^distill.bits: must be of type int, got 2.5$"):  # its type: the default's
        spec_from_dict({"distill": {"bits": 2.5}})
    sweep = spec_from_dict({"sweep": {"distill.bits": [2, 8]}})
    assert [v.spec.distill.bits for v in sweep.variants()] == [2, 8]
    with pytest.raises(ConfigError, match=r'^sweep."distill.bits"\[1\]: must be an integer in \[1, 16\], got 17$'):
        spec_from_dict({"sweep": {"distill.bits": [2, 17]}})


def test_a_registry_refuses_a_name_twice_and_a_field_declared_two_ways():
    registry: Registry[int] = Registry("thing")
    registry.add("a", 1)
    with pytest.raises(ValueError, match="thing 'a' is registered twice"):
        registry.add("a", 2)
    one = ConfigField(1, lambda v: v > 0, "positive")
    assert merge_fields({"x": {"n": one}, "y": {"n": one}}) == {"n": one}
    with pytest.raises(ValueError, match="field 'n' is declared differently"):
        merge_fields({"x": {"n": one}, "y": {"n": ConfigField(2, lambda v: v > 0, "positive")}})
