"""Numerical parity of the PyTorch and TensorFlow implementations (the checks of `distillbench parity`),
and negative controls showing that the check can fail."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import background_command, finished
from distillbench.implementations import parity
from distillbench.implementations.frameworks import get_backend
from distillbench.implementations.pipeline import initial_weights
from distillbench.implementations.spec import load_spec
from distillbench.implementations.tf_backend import TensorFlowBackend

STEPS = 20
KINDS = ("regression", "binary", "multiclass")
OBJECTIVES = ("soft_targets", "logit_matching", "hard_labels")


def expected_cases(kind: str) -> list[tuple]:
    """(task, role, objective, transfer rows) in the order parity runs them: every objective of the
    distilled student (one on regression), without and with transfer rows in its batches."""
    objectives = ("soft_targets",) if kind == "regression" else OBJECTIVES
    return (
        [(kind, "teacher", None, False)]
        + [(kind, "student_kd", o, t) for o in objectives for t in (False, True)]
        + [(kind, "student_scratch", None, False)]
    )


def case_key(case: dict) -> tuple:
    return case["task"], case["role"], case["objective"], case["transfer"]


pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def cli_parity_json(tmp_path_factory):
    """`distillbench parity --json` started with this module's first test, so that it runs beside the
    in-process tests (it loads both frameworks: seconds). Output goes to files: no pipe can fill up."""
    yield from background_command(
        tmp_path_factory.mktemp("cli_parity_json"), "parity", "--task", "regression", "--steps", "3", "--json"
    )


@pytest.fixture(scope="module")
def result():
    return parity.run_parity(load_spec("default"), task="all", steps=STEPS, seed=0)


def test_parity_passes_with_the_stated_tolerances(result):
    assert result["tolerance"] == {"forward": 1e-5, "step": 1e-4}
    # whatever the config's rate, parity runs at PARITY_LEARNING_RATE, divided by 10 half-way
    assert result["rate_change"] == {"after_step": STEPS // 2, "learning_rate": parity.PARITY_LEARNING_RATE / 10}
    assert result["frameworks"] == ["torch", "tensorflow"]
    assert [case_key(c) for c in result["cases"]] == ALL_CASES
    assert result["ok"]


ALL_CASES = [key for kind in KINDS for key in expected_cases(kind)]


@pytest.mark.parametrize("key", ALL_CASES, ids=lambda k: "-".join(map(str, k)))
def test_every_difference_is_within_tolerance(result, key):
    case = next(c for c in result["cases"] if case_key(c) == key)
    assert case["ok"]
    assert case["forward"] <= parity.FORWARD_TOLERANCE
    assert [s["step"] for s in case["steps"]] == list(range(1, STEPS + 1))
    for step in case["steps"]:
        for key in ("loss", "outputs", "weights"):
            assert 0.0 <= step[key] <= parity.STEP_TOLERANCE, (step["step"], key, step[key])
    assert case["max"] == {key: max(s[key] for s in case["steps"]) for key in ("loss", "outputs", "weights")}


def test_cli_parity_json(cli_parity_json):
    returncode, stdout, stderr = finished(cli_parity_json)
    assert returncode == 0, stderr[-2000:]
    out = json.loads(stdout)
    assert out["ok"] is True and out["steps"] == 3
    assert [case_key(c) for c in out["cases"]] == expected_cases("regression")
    assert all(len(c["steps"]) == 3 and c["ok"] for c in out["cases"])


# --- negative controls: a TensorFlow side that differs a little must be caught ---------------------


class PerturbedInitTF(TensorFlowBackend):
    """Starts from the shared initial weights plus noise of 1e-4."""

    def build(self, spec, weights):
        rng = np.random.default_rng(123)
        return super().build(
            spec, [w + np.float32(1e-4) * rng.standard_normal(w.shape, dtype=np.float32) for w in weights]
        )


class OtherEpsilonTF(TensorFlowBackend):
    """Adam with epsilon 1e-4 instead of the spec's 1e-7 (the frameworks' defaults differ too)."""

    def trainer(self, model, loss, training):
        return super().trainer(model, loss, dataclasses.replace(training, epsilon=1e-4))


class FixedRateTF(TensorFlowBackend):
    """A trainer that ignores the schedule: the rate it was built with stays."""

    def trainer(self, model, loss, training):
        trainer = super().trainer(model, loss, training)
        trainer.set_learning_rate = lambda value: None
        return trainer


@pytest.fixture(scope="module")
def parity_spec():
    spec = load_spec("default")  # as run_parity runs it
    return spec.replace(
        training=dataclasses.replace(spec.training, batch_size=32, learning_rate=parity.PARITY_LEARNING_RATE)
    )


def test_forward_check_catches_perturbed_initial_weights(parity_spec):
    torch_backend, tf_backend = get_backend("torch"), PerturbedInitTF()
    _, n_classes, x, _ = parity.synthetic_problem("multiclass", 256, 12, 0)
    weights = initial_weights(parity_spec.teacher, x.shape[1], n_classes, 0, "teacher")
    out_torch = torch_backend.predict(torch_backend.build(parity_spec.teacher, weights), x)
    out_tf = tf_backend.predict(tf_backend.build(parity_spec.teacher, weights), x)
    assert np.max(np.abs(out_torch - out_tf)) > 10 * parity.FORWARD_TOLERANCE

    case = parity.parity_case(parity_spec, "regression", "student_kd", 5, 0, [torch_backend, tf_backend])
    assert case["forward"] > parity.FORWARD_TOLERANCE
    assert not case["ok"]


@pytest.mark.parametrize(("kind", "role"), [("multiclass", "teacher"), ("regression", "student_kd")])
def test_step_check_catches_an_optimiser_mismatch(parity_spec, kind, role):
    backends = [get_backend("torch"), OtherEpsilonTF()]
    for backend in backends:
        backend.configure(0)
    case = parity.parity_case(parity_spec, kind, role, STEPS, 0, backends)
    assert case["forward"] <= parity.FORWARD_TOLERANCE  # same weights: the forward pass still agrees
    assert case["max"]["weights"] > parity.STEP_TOLERANCE
    assert not case["ok"]


def test_step_check_covers_the_learning_rate_schedule(parity_spec):
    # Half-way the rate is cut in both frameworks; a side that ignores it agrees up to that step only.
    backends = [get_backend("torch"), FixedRateTF()]
    for backend in backends:
        backend.configure(0)
    case = parity.parity_case(parity_spec, "multiclass", "student_scratch", STEPS, 0, backends)
    change = parity.rate_change(parity_spec, STEPS)
    assert change == {"after_step": STEPS // 2, "learning_rate": parity_spec.training.learning_rate / 10}
    before = [s for s in case["steps"] if s["step"] <= change["after_step"]]
    after = [s for s in case["steps"] if s["step"] > change["after_step"]]
    assert all(s["weights"] <= parity.STEP_TOLERANCE for s in before)
    assert max(s["weights"] for s in after) > parity.STEP_TOLERANCE
    assert not case["ok"]
