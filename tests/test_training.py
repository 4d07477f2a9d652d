"""Training in each framework: determinism, end-to-end quality, distillation, early stopping, the
`seed` preset and `distillbench demo`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import background_command, finished
from distillbench.implementations.frameworks import get_backend
from distillbench.implementations.parity import synthetic_problem
from distillbench.implementations.pipeline import (
    Data,
    LossSpec,
    Pipeline,
    batch_order,
    epochs_per_evaluation,
    fit,
    initial_weights,
)
from distillbench.implementations.spec import DistillSpec, MLPSpec, PipelineSpec, TrainingSpec, load_spec

FRAMEWORKS = ["torch", "tensorflow"]


def split(x, y, task, n_classes, n_train, n_val):
    """Train / validation as ``Data``, the remaining rows as a held-out test set."""
    cut = n_train + n_val
    return Data(task, n_classes, x[:n_train], y[:n_train], x[n_train:cut], y[n_train:cut]), x[cut:], y[cut:]


def same_weights(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(p, q) for p, q in zip(a, b))


def quality(task, pred, y):
    """Accuracy (higher is better) or RMSE (lower is better)."""
    return (
        float(np.mean(pred.argmax(axis=1) == y))
        if task == "classification"
        else float(np.sqrt(np.mean((pred - y) ** 2)))
    )


pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def cli_demo(tmp_path_factory):
    """`distillbench demo --config seed --rows 600` started with this module's first test, so that it
    runs beside the in-process tests (it loads both frameworks and trains six models). Output goes to
    files: no pipe can fill up."""
    yield from background_command(tmp_path_factory.mktemp("cli_demo"), "demo", "--config", "seed", "--rows", "600")


# --- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_same_seed_gives_bit_identical_weights(framework):
    backend = get_backend(framework)
    task, n_classes, x, y = synthetic_problem("multiclass", 320, 8, seed=3)
    data, _, _ = split(x, y, task, n_classes, 256, 64)
    spec = PipelineSpec(
        teacher=MLPSpec(widths=[32, 32], dropout=0.3),
        training=TrainingSpec(epochs=3, batch_size=32, learning_rate=3e-3, patience=3),
    )

    def teacher_weights(framework_seed):
        backend.configure(framework_seed)
        model, _ = Pipeline(backend, spec, data, seed=0).fit_teacher()
        return backend.get_weights(model)

    first, again = teacher_weights(7), teacher_weights(7)
    assert same_weights(first, again)
    # Dropout masks come from the framework's generator: another framework seed (same initial weights
    # and batches) gives other weights, so dropout really ran and the equality above means something.
    assert not same_weights(first, teacher_weights(8))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_trainer_run_gives_the_weights_of_its_steps_one_by_one(framework):
    # A backend's epoch path (``Trainer.run``: tensors made once, TF's whole epoch in one graph) is
    # the plain loop of ``step`` over the batches, bit for bit: dropout masks in the same order, a
    # learning rate changed between epochs honoured, the last smaller batch included.
    backend = get_backend(framework)
    task, n_classes, x, y = synthetic_problem("multiclass", 300, 8, seed=3)
    mlp = MLPSpec(widths=[32, 32], dropout=0.3)

    def train(by_step: bool, schedule: bool = True):
        backend.configure(5)
        model = backend.build(mlp, initial_weights(mlp, 8, n_classes, 0, "teacher"))
        trainer = backend.trainer(model, LossSpec(task), TrainingSpec(learning_rate=3e-3))
        for epoch in range(1, 4):
            batches = batch_order(len(x), 64, 0, epoch)  # 4 batches of 64, one of 44
            if by_step:
                for rows in batches:
                    trainer.step(x[rows], y[rows], None)
            else:
                trainer.run(x, y, None, batches)
            if schedule:
                trainer.set_learning_rate(3e-3 / (epoch + 1))
        return backend.get_weights(model)

    by_run = train(by_step=False)
    assert same_weights(by_run, train(by_step=True))
    assert not same_weights(by_run, train(by_step=False, schedule=False))  # the schedule took effect


def gpu_present(framework: str) -> bool:
    if framework == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_device_gpu_without_a_gpu_is_refused_and_cpu_still_works(framework):
    # No GPU on the machines this suite runs on: `--device gpu` must say so, not fall back to the CPU.
    backend = get_backend(framework)
    if gpu_present(framework):
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match=r"--device gpu: \w+ sees no"):
        backend.configure(0, device="gpu")
    backend.configure(0)
    assert backend.determinism and "GPU" not in backend.determinism
    model = backend.build(MLPSpec(widths=[4]), initial_weights(MLPSpec(widths=[4]), 3, 1, 0, "teacher"))
    assert backend.predict(model, np.ones((2, 3), np.float32)).shape == (2, 1)


# --- end to end ----------------------------------------------------------------------------------

E2E_SPEC = PipelineSpec(
    teacher=MLPSpec(widths=[64, 64], dropout=0.1),
    student=MLPSpec(widths=[16]),
    distill=DistillSpec(alpha=0.5, temperature=2.0),
    training=TrainingSpec(epochs=12, batch_size=64, learning_rate=3e-3, patience=4),
)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("kind", ["regression", "binary", "multiclass"])
def test_end_to_end_beats_a_trivial_predictor(framework, kind):
    backend = get_backend(framework)
    backend.configure(0)
    task, n_classes, x, y = synthetic_problem(kind, 1024, 10, seed=0)
    data, x_test, y_test = split(x, y, task, n_classes, 512, 128)
    pipeline = Pipeline(backend, E2E_SPEC, data, seed=0)

    teacher, _ = pipeline.fit_teacher()
    _, targets_train, targets_val = pipeline.compress(teacher)
    if task == "classification":
        np.testing.assert_allclose(targets_train.sum(axis=1), 1.0, atol=1e-5)
    student, _ = pipeline.fit_student_kd(targets_train, targets_val)

    for role, model in (("teacher", teacher), ("student_kd", student)):
        score = quality(task, pipeline.predict(model, x_test), y_test)
        if task == "classification":
            majority = np.mean(y_test == np.bincount(data.y_train).argmax())
            assert score >= majority + 0.2, (role, score, majority)
        else:
            mean_rmse = np.sqrt(np.mean((y_test - data.y_train.mean()) ** 2))
            assert score <= 0.75 * mean_rmse, (role, score, mean_rmse)


def noisy_multiclass(seed: int, n_rows: int, n_features: int = 8, n_classes: int = 3, noise: float = 0.4):
    """Classes from a smooth function of x; a fraction ``noise`` of the labels replaced by random ones."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, n_features)).astype(np.float32)
    y = np.argmax(np.tanh(1.5 * x @ rng.normal(size=(n_features, n_classes))), axis=1)
    flip = rng.random(n_rows) < noise
    y[flip] = rng.integers(0, n_classes, size=flip.sum())
    return x, y.astype(np.int64), n_classes


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_distilled_student_agrees_with_teacher_more_than_scratch_student(framework):
    # With noisy labels the scratch student learns the noise of a few hundred rows; the distilled one
    # (alpha = 0: teacher only) learns the teacher's function. Agreement is measured on unseen rows.
    backend = get_backend(framework)
    backend.configure(0)
    x, y, n_classes = noisy_multiclass(seed=0, n_rows=1600)
    data, x_test, _ = split(x, y, "classification", n_classes, 384, 192)
    spec = PipelineSpec(
        teacher=MLPSpec(widths=[64, 64]),
        student=MLPSpec(widths=[16]),
        distill=DistillSpec(alpha=0.0, temperature=2.0),
        training=TrainingSpec(epochs=40, batch_size=64, learning_rate=3e-3, patience=5),
    )
    pipeline = Pipeline(backend, spec, data, seed=0)
    teacher, _ = pipeline.fit_teacher()
    _, targets_train, targets_val = pipeline.compress(teacher)
    student, _ = pipeline.fit_student_kd(targets_train, targets_val)
    scratch, _ = pipeline.fit_student_scratch()

    teacher_class = pipeline.predict(teacher, x_test).argmax(axis=1)
    agree_kd = np.mean(pipeline.predict(student, x_test).argmax(axis=1) == teacher_class)
    agree_scratch = np.mean(pipeline.predict(scratch, x_test).argmax(axis=1) == teacher_class)
    assert agree_kd >= agree_scratch + 0.03, (agree_kd, agree_scratch)


# --- early stopping ------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_early_stopping_stops_and_restores_the_best_weights(framework):
    backend = get_backend(framework)
    task, n_classes, x, y = synthetic_problem("regression", 256, 10, seed=0)
    y = (y + 0.5 * np.random.default_rng(0).normal(size=len(y))).astype(np.float32)  # easy to overfit
    data, _, _ = split(x, y, task, n_classes, 128, 128)
    budget, patience = 100, 3
    spec = PipelineSpec(
        teacher=MLPSpec(widths=[64, 64]),
        training=TrainingSpec(epochs=budget, batch_size=32, learning_rate=3e-3, patience=patience, **PER_EPOCH),
    )

    backend.configure(0)
    model, result = Pipeline(backend, spec, data, seed=0).fit_teacher()
    assert 1 < result.best_epoch < result.epochs < budget
    assert result.epochs == result.best_epoch + patience
    assert result.stop_reason == "early_stopping"
    assert (result.steps, result.best_step) == (4 * result.epochs, 4 * result.best_epoch)  # 128 rows, batch 32
    restored = backend.get_weights(model)
    assert backend.loss(model, LossSpec("regression"), data.x_val, data.y_val, None) == result.best_val_loss

    # The restored weights are those after epoch best_epoch: a run with that budget ends on them.
    short = spec.replace(training=dataclasses.replace(spec.training, epochs=result.best_epoch))
    backend.configure(0)
    model_short, result_short = Pipeline(backend, short, data, seed=0).fit_teacher()
    assert result_short.best_epoch == result.best_epoch
    assert same_weights(backend.get_weights(model_short), restored)


# --- budgets, stop reasons, schedule ------------------------------------------------------------

# Early stopping checked after every epoch, on any improvement, at a constant rate: the loop as it was
# before evaluations of whole epochs, min_delta and the plateau schedule (their tests set them).
PER_EPOCH = {"eval_steps": 1, "min_delta": 0.0, "lr_schedule": "constant"}


def overfitting_regression(n_train: int = 128):
    """Noisy targets and a wide network: the validation loss soon stops improving."""
    task, n_classes, x, y = synthetic_problem("regression", 2 * n_train, 10, seed=0)
    y = (y + 0.5 * np.random.default_rng(0).normal(size=len(y))).astype(np.float32)
    data, _, _ = split(x, y, task, n_classes, n_train, n_train)
    return data


def fit_scratch(framework: str, data: Data, **training):
    """The scratch student (widths [32]) trained with these training settings, batch 32."""
    backend = get_backend(framework)
    backend.configure(0)
    spec = PipelineSpec(student=MLPSpec(widths=[32]), training=TrainingSpec(batch_size=32, **training))
    pipeline = Pipeline(backend, spec, data, seed=0)
    model, result = pipeline.fit_student_scratch()
    return backend, pipeline, model, result


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_max_steps_cuts_the_epoch_it_ends_in(framework):
    # 128 rows at batch 32: 4 steps per epoch; 10 steps end inside the third epoch.
    _, _, _, result = fit_scratch(framework, overfitting_regression(), epochs=100, max_steps=10, patience=100)
    assert (result.stop_reason, result.steps, result.epochs) == ("max_steps", 10, 3)
    assert 1 <= result.best_step <= 10 and result.best_step in (4, 8, 10)  # evaluated after each epoch and at the cut


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_max_epochs_ends_on_the_epoch_budget(framework):
    _, _, _, result = fit_scratch(framework, overfitting_regression(), epochs=3, patience=100)
    assert (result.stop_reason, result.steps, result.epochs) == ("max_epochs", 12, 3)


def test_evaluations_hold_whole_epochs_of_at_least_eval_steps():
    # 4 steps per epoch, eval_steps 10: one evaluation every 3 epochs (12 steps); patience 2 is then
    # 2 evaluations = 6 epochs = 24 steps without improvement.
    data = overfitting_regression()
    assert epochs_per_evaluation(128, TrainingSpec(batch_size=32, eval_steps=10)) == 3
    assert epochs_per_evaluation(128, TrainingSpec(batch_size=32, eval_steps=1)) == 1
    assert epochs_per_evaluation(10_000, TrainingSpec(batch_size=128, eval_steps=50)) == 1
    _, _, _, result = fit_scratch("torch", data, epochs=1000, eval_steps=10, patience=2)
    assert result.stop_reason == "early_stopping"
    assert result.epochs % 3 == 0 and result.best_epoch % 3 == 0 and result.steps == 4 * result.epochs
    assert result.epochs == result.best_epoch + 6
    # A cut at max_steps is evaluated too: 30 steps = two whole evaluations (24) and 6 steps.
    _, _, _, cut = fit_scratch("torch", data, epochs=1000, max_steps=30, eval_steps=10, patience=100)
    assert (cut.stop_reason, cut.steps, cut.epochs) == ("max_steps", 30, 8)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_diverging_model_ends_as_diverged_with_its_best_weights(framework):
    data = overfitting_regression()
    backend, pipeline, model, result = fit_scratch(framework, data, learning_rate=1e12, epochs=50, patience=50)
    assert result.stop_reason == "diverged" and result.steps < 50 * 4
    # Diverged at its first evaluation: the weights kept are the initial ones, finite and usable.
    assert (result.best_step, result.best_epoch) == (0, 0)
    assert same_weights(backend.get_weights(model), backend.get_weights(pipeline.new_model("student_scratch")))
    assert np.all(np.isfinite(pipeline.predict(model, data.x_val)))


def test_a_time_limit_stops_before_the_budget():
    # A limit no training can meet: the model stops after its first evaluation, far inside its budget.
    _, _, _, result = fit_scratch(
        "torch", overfitting_regression(), epochs=1000, patience=1000, time_limit=1e-9, eval_steps=1
    )
    assert (result.stop_reason, result.epochs, result.steps) == ("time_limit", 1, 4)


class RateSpy:
    """A backend whose trainers report every learning rate the shared loop sets (real training)."""

    def __init__(self, backend):
        self.backend, self.rates = backend, []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def trainer(self, model, loss, training):
        trainer = self.backend.trainer(model, loss, training)
        set_rate = trainer.set_learning_rate

        def record(value):
            self.rates.append(value)
            set_rate(value)

        trainer.set_learning_rate = record
        return trainer


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_plateau_schedule_lowers_the_rate_down_to_its_floor(framework):
    data = overfitting_regression()
    spy = RateSpy(get_backend(framework))
    spy.configure(0)
    training = TrainingSpec(
        epochs=200,
        batch_size=32,
        learning_rate=1e-2,
        eval_steps=1,
        patience=12,
        min_delta=0.0,
        lr_schedule="plateau",
        lr_factor=0.5,
        lr_patience=2,
        min_learning_rate=2e-3,
    )
    spec = PipelineSpec(student=MLPSpec(widths=[32]), training=training)
    model = Pipeline(spy, spec, data, seed=0).new_model("student_scratch")
    result = fit(
        spy,
        model,
        LossSpec("regression"),
        training,
        0,
        (data.x_train, data.y_train, None),
        (data.x_val, data.y_val, None),
    )
    assert spy.rates == pytest.approx([5e-3, 2.5e-3, 2e-3])  # halved after each plateau, down to the floor
    assert result.learning_rate == pytest.approx(spy.rates[-1]) and result.stop_reason == "early_stopping"
    # Without a schedule the rate is never touched.
    _, _, _, constant = fit_scratch(
        framework, data, epochs=200, learning_rate=1e-2, patience=12, lr_schedule="constant"
    )
    assert constant.learning_rate == 1e-2


# --- the seed preset and the demo command --------------------------------------------------------


def test_seed_preset_end_to_end_in_both_frameworks():
    spec = load_spec("seed")
    task, n_classes, x, y = synthetic_problem("regression", 300, 100, seed=0)
    data, x_test, _ = split(x, y, task, n_classes, 180, 60)
    runs = {}
    for framework in FRAMEWORKS:
        backend = get_backend(framework)
        backend.configure(0)
        pipeline = Pipeline(backend, spec, data, seed=0)
        teacher, teacher_fit = pipeline.fit_teacher()
        compressor, targets_train, targets_val = pipeline.compress(teacher)
        student, student_fit = pipeline.fit_student_kd(targets_train, targets_val)
        assert backend.n_params(teacher) == (100 * 128 + 128) + (128 * 64 + 64) + (64 + 1)
        assert backend.n_params(student) == 100 + 1  # Dense(1)
        assert compressor.kind == "affine"
        pred = pipeline.predict(student, x_test)
        assert pred.shape == (len(x_test),) and np.all(np.isfinite(pred))
        runs[framework] = (teacher_fit, student_fit, compressor, pred)

    # Same initial weights, batches, optimiser and loss: the frameworks end in the same place.
    (t_fit, s_fit, comp, pred), (t_fit2, s_fit2, comp2, pred2) = runs.values()
    assert (t_fit.epochs, t_fit.best_epoch, s_fit.epochs, s_fit.best_epoch) == (
        t_fit2.epochs,
        t_fit2.best_epoch,
        s_fit2.epochs,
        s_fit2.best_epoch,
    )
    assert comp.scale == pytest.approx(comp2.scale, abs=1e-4)
    assert comp.offset == pytest.approx(comp2.offset, abs=1e-4)
    np.testing.assert_allclose(pred, pred2, atol=1e-3)


def test_cli_demo_seed_preset(cli_demo):
    returncode, stdout, stderr = finished(cli_demo)
    assert returncode == 0, stderr[-2000:]
    for text in ("[torch] compressor: affine", "[tensorflow] compressor: affine", "student_kd", "student_scratch"):
        assert text in stdout
