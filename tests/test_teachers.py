"""The teacher kinds (``teacher.kind``): residual MLP, ensemble of MLPs, gradient-boosted trees; and
the default, ``mlp``, unchanged. Real frameworks, small data."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from conftest import background_command, finished, iris_job
from distillbench.benchmarks.reporting.sections import run_table
from distillbench.errors import UserError
from distillbench.implementations import parity
from distillbench.implementations.frameworks import get_backend
from distillbench.implementations.parity import synthetic_problem
from distillbench.implementations.pipeline import (
    Data,
    LossSpec,
    NeutralModel,
    Pipeline,
    batch_order,
    fit,
    initial_weights,
)
from distillbench.implementations.roles import REFERENCE, REFERENCES, ROLES
from distillbench.implementations.spec import (
    ConfigError,
    MLPSpec,
    PipelineSpec,
    TeacherSpec,
    TrainingSpec,
    load_spec,
    presets,
    residual_skips,
    spec_from_dict,
)
from distillbench.implementations.teachers import TEACHER_KINDS, teacher_fields

FRAMEWORKS = ("torch", "tensorflow")
KINDS = ("regression", "binary", "multiclass")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def trees_smoke_run(openml_source, openml_cache, tmp_path_factory):
    """`distillbench run --suite smoke --seeds 1 --config trees --no-deploy`, started with this
    module's first test so that it runs beside the in-process tests."""
    folder = tmp_path_factory.mktemp("trees_smoke")
    yield from background_command(
        folder,
        "run",
        "--suite",
        "smoke",
        "--seeds",
        "1",
        "--config",
        "trees",
        "--no-deploy",
        "--openml-source",
        str(openml_source),
        "--cache",
        str(openml_cache.root),
        "--timing-budget",
        "0.05",
        "--out",
        str(folder / "run"),
    )


def problem(kind: str, n_rows: int = 400, n_features: int = 10):
    """Train / validation ``Data`` from a synthetic problem, and the held-out rows."""
    task, n_classes, x, y = synthetic_problem(kind, n_rows, n_features, seed=0)
    a, b = int(0.6 * n_rows), int(0.8 * n_rows)
    return Data(task, n_classes, x[:a], y[:a], x[a:b], y[a:b]), x[b:]


def tiny(teacher: dict, epochs: int = 3) -> PipelineSpec:
    return spec_from_dict(
        {
            "teacher": teacher,
            "student": {"widths": [4]},
            "training": {"epochs": epochs, "batch_size": 32, "patience": 2},
        }
    )


@pytest.fixture(scope="module")
def backends():
    out = {name: get_backend(name) for name in FRAMEWORKS}
    for backend in out.values():
        backend.configure(0)
    return out


# --- the spec -------------------------------------------------------------------------------------

INVALID = [
    ({"kind": "forest"}, "teacher.kind", "mlp, residual_mlp, ensemble, hist_gradient_boosting"),
    ({"kind": "ensemble", "members": 1}, "teacher.members", "must be an integer >= 2, got 1"),
    ({"kind": "ensemble", "members": True}, "teacher.members", "must be of type int"),
    ({"kind": "hist_gradient_boosting", "max_iter": 0}, "teacher.max_iter", "positive integer"),
    ({"kind": "hist_gradient_boosting", "learning_rate": 0.0}, "teacher.learning_rate", "> 0"),
    ({"kind": "hist_gradient_boosting", "max_leaf_nodes": 1}, "teacher.max_leaf_nodes", ">= 2"),
    ({"learning_rate": 0.05}, "teacher.learning_rate", "used only by kind = 'hist_gradient_boosting', not 'mlp'"),
    ({"kind": "residual_mlp", "members": 3}, "teacher.members", "used only by kind = 'ensemble'"),
    ({"kind": "ensemble", "max_iter": 50}, "teacher.max_iter", "used only by kind = 'hist_gradient_boosting'"),
    ({"kind": "residual_mlp", "widths": [64, 32]}, "teacher.widths", "two consecutive hidden layers of one width"),
    ({"kind": 3}, "teacher.kind", "must be of type str"),
]


@pytest.mark.parametrize(("teacher", "field", "says"), INVALID, ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(INVALID)])
def test_invalid_teacher_fields_are_refused_naming_the_field(teacher, field, says):
    with pytest.raises(ConfigError) as info:
        spec_from_dict({"teacher": teacher})
    message = str(info.value)
    assert message.startswith(f"{field}:") and says in message, message
    assert isinstance(info.value, UserError)


# --- the registry of kinds -----------------------------------------------------------------------


def test_the_registered_kinds_and_the_teacher_fields_they_declare():
    assert list(TEACHER_KINDS) == ["mlp", "residual_mlp", "ensemble", "hist_gradient_boosting"]
    # [teacher]: the MLP's fields, kind, then the kinds' own, as configs have always had them.
    assert [f.name for f in dataclasses.fields(TeacherSpec)] == [
        "widths",
        "activation",
        "dropout",
        "kind",
        "members",
        "max_iter",
        "learning_rate",
        "max_leaf_nodes",
    ]
    assert list(teacher_fields()) == ["members", "max_iter", "learning_rate", "max_leaf_nodes"]
    assert all(getattr(TeacherSpec(), name) == field.default for name, field in teacher_fields().items())


# A value other than the default for each field a kind declares.
OTHER_VALUE = {"members": 3, "max_iter": 50, "learning_rate": 0.05, "max_leaf_nodes": 8}
OWNED = [(owner, name) for owner, kind in TEACHER_KINDS.items() for name in kind.FIELDS]


@pytest.mark.parametrize(("owner", "name"), OWNED)
def test_a_field_of_one_kind_is_refused_with_every_other_kind(owner, name):
    base = {"widths": [8, 8]}  # a residual_mlp needs a skip
    assert (
        getattr(spec_from_dict({"teacher": {**base, "kind": owner, name: OTHER_VALUE[name]}}).teacher, name)
        == OTHER_VALUE[name]
    )
    for other in set(TEACHER_KINDS) - {owner}:
        with pytest.raises(ConfigError, match=rf"^teacher.{name}: used only by kind = '{owner}', not '{other}'$"):
            spec_from_dict({"teacher": {**base, "kind": other, name: OTHER_VALUE[name]}})


def test_each_kind_describes_its_teacher_in_the_reports_run_table():
    """The run table's config line, by kind (the words reports have always used); an older config
    without a kind is an MLP."""

    def config_line(teacher: dict) -> str:
        rows = run_table({"config": {"name": "x", "teacher": teacher}}).rows
        return next(value for key, value in rows if key == "config").split(";")[0]

    mlp = {"widths": [64, 64], "activation": "relu", "dropout": 0.1}
    assert config_line(mlp) == "x: teacher [64, 64] relu dropout 0.1"
    assert config_line({**mlp, "kind": "mlp"}) == "x: teacher [64, 64] relu dropout 0.1"
    assert config_line({**mlp, "kind": "residual_mlp"}) == "x: teacher residual MLP [64, 64] relu dropout 0.1"
    ensemble = {**mlp, "kind": "ensemble", "members": 3}
    assert config_line(ensemble) == "x: teacher ensemble of 3 MLPs [64, 64] relu dropout 0.1"
    trees = {**mlp, "kind": "hist_gradient_boosting", "max_iter": 20, "learning_rate": 0.1, "max_leaf_nodes": 31}
    assert config_line(trees) == (
        "x: teacher gradient-boosted trees (scikit-learn, max_iter 20, learning_rate 0.1, max_leaf_nodes 31)"
    )


def test_the_default_teacher_is_the_mlp_it_was():
    teacher = PipelineSpec().teacher
    assert isinstance(teacher, TeacherSpec) and teacher.kind == "mlp"
    assert (teacher.widths, teacher.activation, teacher.dropout) == ([256, 256, 128], "relu", 0.1)
    assert load_spec("default") == PipelineSpec()
    assert PipelineSpec().to_dict()["teacher"]["kind"] == "mlp"
    # A section naming only some fields keeps the others at their defaults, as before.
    assert spec_from_dict({"teacher": {"widths": [16]}}).teacher == TeacherSpec(widths=[16])
    # The streams of the default MLP teacher are the ones it always had.
    spec = PipelineSpec().teacher
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            initial_weights(spec, 5, 2, 7, "teacher"),
            initial_weights(MLPSpec(widths=[256, 256, 128]), 5, 2, 7, "teacher"),
        )
    )
    expected = np.random.default_rng([7, 1003]).permutation(50)
    assert np.array_equal(np.concatenate(batch_order(50, 8, 7, 3)), expected)


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_default_mlp_teacher_trains_exactly_as_before(backends, framework):
    """kind = "mlp" through ``fit_teacher`` is the plain MLP trained by the shared loop: same weights."""
    backend = backends[framework]
    data, _ = problem("multiclass")
    spec = tiny({"widths": [16], "dropout": 0.0})
    backend.configure(0)
    model, result = Pipeline(backend, spec, data, seed=0).fit_teacher()
    backend.configure(0)
    plain = MLPSpec(widths=[16])
    reference = backend.build(plain, initial_weights(plain, data.x_train.shape[1], data.n_outputs, 0, "teacher"))
    expected = fit(
        backend,
        reference,
        LossSpec(data.task),
        spec.training,
        0,
        (data.x_train, data.y_train, None),
        (data.x_val, data.y_val, None),
    )
    assert result == expected and not result.members
    assert all(np.array_equal(a, b) for a, b in zip(backend.get_weights(model), backend.get_weights(reference)))
    assert type(model).__name__ == type(reference).__name__ == ("Sequential")


def test_presets_of_the_teacher_kinds():
    assert {"residual", "ensemble", "trees"} <= set(presets())
    assert load_spec("residual").teacher.kind == "residual_mlp"
    assert residual_skips(load_spec("residual").teacher) == [False, True, True]
    assert load_spec("ensemble").teacher.kind == "ensemble" and load_spec("ensemble").teacher.members == 5
    assert load_spec("trees").teacher.kind == "hist_gradient_boosting"
    for name in ("residual", "ensemble", "trees"):
        assert load_spec(name).name == name
        assert load_spec(name).student == PipelineSpec().student


def test_residual_skips():
    assert residual_skips(TeacherSpec(kind="residual_mlp", widths=[256, 256, 256])) == [False, True, True]
    assert residual_skips(TeacherSpec(kind="residual_mlp", widths=[8, 16, 16, 4, 4])) == [
        False,
        False,
        True,
        False,
        True,
    ]
    assert residual_skips(TeacherSpec(widths=[256, 256, 256])) == [False, False, False]  # kind mlp: none
    assert residual_skips(MLPSpec(widths=[8, 8])) == [False, False]  # a student: none


# --- residual MLP ----------------------------------------------------------------------------------

RESIDUAL = TeacherSpec(kind="residual_mlp", widths=[32, 32, 32, 16], activation="tanh", dropout=0.0)


def numpy_forward(spec: MLPSpec, weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    act = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh}[spec.activation]
    h = x.astype(np.float64)
    for (kernel, bias), skip in zip(zip(weights[0:-2:2], weights[1:-2:2]), residual_skips(spec)):
        out = act(h @ kernel + bias)
        h = h + out if skip else out
    return h @ weights[-2] + weights[-1]


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_residual_mlp_computes_its_skip_connections(backends, framework):
    backend = backends[framework]
    _, n_classes, x, _ = synthetic_problem("multiclass", 64, 12, 0)
    weights = initial_weights(RESIDUAL, 12, n_classes, 0, "teacher")
    model = backend.build(RESIDUAL, weights)
    assert all(np.array_equal(a, b) for a, b in zip(backend.get_weights(model), weights))  # same weight list as an MLP
    out = backend.predict(model, x)
    np.testing.assert_allclose(out, numpy_forward(RESIDUAL, weights, x), atol=1e-5)
    plain = backend.predict(backend.build(dataclasses.replace(RESIDUAL, kind="mlp"), weights), x)
    assert np.max(np.abs(out - plain)) > 1e-2  # the skips change the function
    served = backend.serve(model)
    assert served.n_params == sum(w.size for w in weights) and served.model_bytes > 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_residual_teacher_parity_torch_vs_tensorflow(backends, kind):
    spec = PipelineSpec(teacher=RESIDUAL, training=TrainingSpec(batch_size=32))
    case = parity.parity_case(spec, kind, "teacher", 10, 0, [backends["torch"], backends["tensorflow"]])
    assert case["forward"] <= parity.FORWARD_TOLERANCE
    assert len(case["steps"]) == 10 and case["ok"], case["max"]


# --- ensemble ---------------------------------------------------------------------------------------


def log_mean_softmax(logits: np.ndarray) -> np.ndarray:
    """log(mean_k softmax(logits[k])), in float64."""
    z = logits - logits.max(axis=2, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=2, keepdims=True)
    return np.log(p.mean(axis=0))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_ensemble_is_the_mean_of_its_members(backends, framework, kind):
    backend = backends[framework]
    backend.configure(0)
    data, x_test = problem(kind)
    spec = tiny({"kind": "ensemble", "members": 3, "widths": [16], "activation": "tanh"})
    pipeline = Pipeline(backend, spec, data, seed=0)
    model, result = pipeline.fit_teacher()
    weights = backend.get_weights(model)
    assert len(weights) == 3 * 4  # the members' weights, member after member
    members = [weights[4 * k : 4 * k + 4] for k in range(3)]
    member_out = np.stack([numpy_forward(spec.teacher, w, x_test) for w in members])
    out = pipeline.outputs(model, x_test)
    if data.task == "classification":
        np.testing.assert_allclose(out, log_mean_softmax(member_out), atol=1e-5)
        np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, atol=1e-5)  # logits of a distribution
    else:
        np.testing.assert_allclose(out, member_out.mean(axis=0)[:, 0], atol=1e-5)
    # Trained members differ; the record's epochs are the members' summed.
    assert not np.allclose(members[0][0], members[1][0]) and not np.allclose(members[1][0], members[2][0])
    assert len(result.members) == 3
    assert result.epochs == sum(m.epochs for m in result.members) and result.best_epoch == sum(
        m.best_epoch for m in result.members
    )
    assert result.steps == sum(m.steps for m in result.members) and result.best_step == sum(
        m.best_step for m in result.members
    )
    # How it ended: the first member's reason that is not early stopping (3 epochs at most: a budget).
    reasons = [m.stop_reason for m in result.members]
    assert result.stop_reason == next((r for r in reasons if r != "early_stopping"), "early_stopping")
    assert set(reasons) <= {"early_stopping", "max_epochs"} and result.learning_rate is None
    assert result.best_val_loss == pytest.approx(backend.loss(model, LossSpec(data.task), data.x_val, data.y_val, None))
    served = pipeline.serve(model)
    assert served.n_params == sum(w.size for w in weights) and served.macs_per_row == sum(w.size for w in weights[0::2])
    assert served.model_bytes > 0


def test_ensemble_members_start_from_different_weights_and_batches():
    spec = TeacherSpec(kind="ensemble", members=4, widths=[8])
    starts = [initial_weights(spec, 5, 3, 0, "teacher", k) for k in range(4)]
    assert all(not np.array_equal(starts[i][0], starts[j][0]) for i in range(4) for j in range(i + 1, 4))
    student = initial_weights(spec, 5, 3, 0, "student_kd")
    assert all(not np.array_equal(s[0], student[0]) for s in starts)
    assert all(
        np.array_equal(a, b) for a, b in zip(starts[0], initial_weights(spec, 5, 3, 0, "teacher"))
    )  # member 0: the MLP teacher
    orders = [np.concatenate(batch_order(100, 10, 0, 1, k)) for k in range(4)]
    assert all(not np.array_equal(orders[i], orders[j]) for i in range(4) for j in range(i + 1, 4))


@pytest.mark.slow
def test_ensemble_forward_parity_torch_vs_tensorflow(backends):
    spec = PipelineSpec(
        teacher=TeacherSpec(kind="ensemble", members=3, widths=[16, 8]), training=TrainingSpec(batch_size=32)
    )
    for kind in KINDS:
        case = parity.parity_case(spec, kind, "teacher", 3, 0, [backends["torch"], backends["tensorflow"]])
        assert case["ok"] and case["forward"] <= parity.FORWARD_TOLERANCE, (kind, case["forward"])


# --- gradient-boosted trees ------------------------------------------------------------------------

TREES = {"kind": "hist_gradient_boosting", "max_iter": 30, "max_leaf_nodes": 8}


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_tree_teacher_is_the_same_in_both_frameworks(backends, kind):
    data, x_test = problem(kind)
    spec = tiny(TREES)
    fitted = {name: Pipeline(backend, spec, data, seed=0).fit_teacher() for name, backend in backends.items()}
    (torch_tree, torch_fit), (tf_tree, tf_fit) = fitted["torch"], fitted["tensorflow"]
    assert isinstance(torch_tree, NeutralModel) and torch_fit == tf_fit
    pipelines = {name: Pipeline(backend, spec, data, seed=0) for name, backend in backends.items()}
    out = pipelines["torch"].outputs(torch_tree, x_test)
    assert np.array_equal(out, pipelines["tensorflow"].outputs(tf_tree, x_test))
    assert out.dtype == np.float32
    estimator = torch_tree.estimator
    if data.task == "classification":
        assert out.shape == (len(x_test), data.n_classes)
        np.testing.assert_allclose(
            pipelines["torch"].predict(torch_tree, x_test), estimator.predict_proba(x_test), atol=1e-5
        )
    else:
        np.testing.assert_allclose(out, estimator.predict(x_test), atol=1e-5)
    # Early stopping on our validation split, the iterations after the best dropped.
    assert 1 <= torch_fit.best_epoch <= torch_fit.epochs <= 30
    assert estimator.n_iter_ == torch_fit.best_epoch and math.isfinite(torch_fit.best_val_loss)
    assert (torch_fit.steps, torch_fit.best_step) == (torch_fit.epochs, torch_fit.best_epoch)
    assert torch_fit.stop_reason == ("max_iter" if torch_fit.epochs == 30 else "early_stopping")
    served = pipelines["torch"].serve(torch_tree)
    assert served.n_params == torch_tree.n_nodes > 0 and served.macs_per_row is None and served.model_bytes > 0
    assert "scikit-learn" in served.path and np.array_equal(
        served.fn(x_test.astype(np.float32)), torch_tree.outputs(x_test)
    )
    assert pipelines["torch"].deployments(torch_tree) == {} == pipelines["tensorflow"].deployments(tf_tree)


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_tree_teacher_distils_into_the_mlp_student(backends, framework):
    backend = backends[framework]
    backend.configure(0)
    data, x_test = problem("multiclass")
    pipeline = Pipeline(backend, tiny(TREES, epochs=5), data, seed=0)
    tree, _ = pipeline.fit_teacher()
    _compressor, t_train, t_val = pipeline.compress(tree)
    assert t_train.shape == (len(data.x_train), data.n_classes) and np.allclose(t_train.sum(axis=1), 1.0, atol=1e-5)
    student, result = pipeline.fit_student_kd(t_train, t_val)
    assert result.epochs >= 1 and pipeline.outputs(student, x_test).shape == (len(x_test), data.n_classes)


@pytest.mark.parametrize("n_classes", [0, 2, 5])
def test_the_tree_teachers_binned_outputs_are_scikit_learns_bit_for_bit(n_classes):
    """``TreeTeacher.raw`` reaches into scikit-learn's private names for speed: held here to the public
    ``decision_function`` / ``predict``, on rows with missing values, values on the bin edges and
    values beyond the training range."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from distillbench.implementations.trees import TreeTeacher

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = np.nansum(x, axis=1)
    if n_classes:  # classes by quantiles of the sum
        y = np.digitize(y, np.quantile(y, np.linspace(0, 1, n_classes + 1)[1:-1]))
    cls = HistGradientBoostingClassifier if n_classes else HistGradientBoostingRegressor
    estimator = cls(max_iter=20, max_leaf_nodes=8, random_state=0).fit(x, y)
    edges = np.array([t[len(t) // 2] for t in estimator._bin_mapper.bin_thresholds_])
    rows = np.vstack([x[:50], edges, edges * 10, np.full(4, np.nan), x[50:51].astype(np.float32)])
    public = estimator.decision_function(rows) if n_classes else estimator.predict(rows)
    assert np.array_equal(TreeTeacher(estimator, n_classes).raw(rows), public)


def test_a_tree_teacher_out_of_iterations_says_so(backends):
    data, _ = problem("regression")
    _, result = Pipeline(backends["torch"], tiny(TREES | {"max_iter": 2}), data, seed=0).fit_teacher()
    assert (result.stop_reason, result.steps) == ("max_iter", 2)


@pytest.mark.slow
def test_the_tree_teacher_has_no_framework_parity_case():
    result = parity.run_parity(load_spec("trees"), task="regression", steps=2)
    assert result["ok"] and [c["role"] for c in result["cases"]] == ["student_kd", "student_kd", "student_scratch"]


@pytest.mark.slow
def test_smoke_suite_distils_the_tree_teacher_in_both_frameworks(trees_smoke_run):
    returncode, _, stderr = finished(trees_smoke_run)
    assert returncode == 0, stderr[-3000:]
    _, folder = trees_smoke_run
    records = [json.loads(line) for line in (folder / "run" / "records.jsonl").read_text().splitlines()]
    assert sorted((r["dataset_id"], r["framework"], r["role"]) for r in records) == sorted(
        [(d, f, role) for d in (61, 531) for f in FRAMEWORKS for role in ROLES]
        + [(d, REFERENCE, role) for d in (61, 531) for role in REFERENCES]
    )
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    for dataset in (61, 531):
        teachers = [r for r in records if r["dataset_id"] == dataset and r["role"] == "teacher"]
        assert teachers[0]["metrics"] == teachers[1]["metrics"]  # one teacher for both frameworks
        assert all("scikit-learn" in t["call_path"] and t["macs_per_row"] is None for t in teachers)
        kd = [r for r in records if r["dataset_id"] == dataset and r["role"] == "student_kd"]
        assert all(isinstance(r["kd_gain"], float) and math.isfinite(r["kd_gain"]) for r in kd)
        assert all(math.isfinite(r["retention"]) for r in kd)
    manifest = json.loads((folder / "run" / "manifest.json").read_text())
    assert manifest["config"]["teacher"]["kind"] == "hist_gradient_boosting"


@pytest.mark.slow
def test_a_job_with_an_ensemble_teacher_records_its_members(openml_source, openml_cache):
    spec = tiny({"kind": "ensemble", "members": 2, "widths": [8]}, epochs=2)
    records = iris_job(spec, openml_source, openml_cache)
    by_role = {r["role"]: r for r in records}
    assert [r["role"] for r in records] == list(ROLES) and all(r["status"] == "ok" for r in records), records[0][
        "error"
    ]
    teacher = by_role["teacher"]
    assert len(teacher["members"]) == 2 and all(1 <= m["epochs"] <= 2 for m in teacher["members"])
    assert teacher["epochs"] == sum(m["epochs"] for m in teacher["members"])
    assert teacher["steps"] == sum(m["steps"] for m in teacher["members"])
    assert all(m["stop_reason"] in ("early_stopping", "max_epochs") for m in teacher["members"])
    assert teacher["n_params"] == 2 * (4 * 8 + 8 + 8 * 3 + 3)  # iris: 4 features, 3 classes
    assert "members" not in by_role["student_kd"] and math.isfinite(by_role["student_kd"]["kd_gain"])
