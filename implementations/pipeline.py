"""The three-stage pipeline, written once: what differs between the frameworks is a ``Backend``.

Everything that must be identical in PyTorch and TensorFlow lives here and is plain numpy: the
initial weights, the order of the mini-batches, the compressor, early stopping. A backend only
builds the network, runs one optimiser step, evaluates the loss and predicts.

Weights cross the boundary as a list of float32 arrays ``[W0, b0, W1, b1, ...]`` with ``W`` of shape
(fan_in, fan_out) (the Keras convention; the torch backend transposes).
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distillbench.implementations import transfer
from distillbench.implementations.compressors import Compressor, fit_compressor, softmax
from distillbench.implementations.spec import GENERATORS, DistillSpec, MLPSpec, PipelineSpec, TrainingSpec
from distillbench.implementations.teachers import TEACHER_KINDS

# Each role (implementations/roles.py) draws its initial weights from its own stream of the run's seed. The two
# students share one stream: the distilled and the scratch student start from the same weights and see the same
# batches, so their difference is the teacher's doing alone.
_INIT_STREAM = {"teacher": 0, "student_kd": 1, "student_scratch": 1}


# How a training ended (``FitResult.stop_reason``); see ``TrainingSpec``. ``max_iter``: the
# iterations of a scikit-learn model (tree teacher, reference) ran out; ``converged``: a linear
# reference's solver converged.
STOP_REASONS = ("early_stopping", "converged", "max_steps", "max_epochs", "max_iter", "time_limit", "diverged")
# The reasons that mean "stopped by the budget, not because it had converged": such a model's
# numbers may be those of a model that had more to learn.
BUDGET_REASONS = ("max_steps", "max_epochs", "max_iter", "time_limit")


@dataclass(frozen=True)
class LossSpec:
    """What a model is trained on: ``alpha * label term + (1 - alpha) * scale * teacher term`` with
    the teacher term of ``objective`` (``objectives.py``), each term the mean over the batch's rows.
    Classification, ``soft_targets``: ``alpha * CE(y, s) + (1 - alpha) * scale * KL(t || softmax(s /
    T))`` with ``scale = T^2`` when ``t_squared``; regression: ``alpha * MSE(y, s) + (1 - alpha) *
    MSE(t, s)``. ``alpha = 1`` is plain supervised training (teacher, scratch student), where ``t``
    is not used.

    ``masked``: some rows have no label (a transfer set; their ``y`` is ``no_labels``): the loss is
    the batch mean of ``w * label + (1 - w) * scale * teacher`` with ``w = alpha`` on a labelled row
    and 0 on one without, so a transfer row contributes its teacher term alone, and a batch of
    labelled rows only gives the formula above."""

    task: str
    alpha: float = 1.0
    temperature: float = 1.0
    t_squared: bool = True
    objective: str = "soft_targets"
    masked: bool = False


def no_labels(task: str, n_rows: int) -> np.ndarray:
    """The ``y`` of rows without a label, as the losses recognise them: class -1, or NaN."""
    return np.full(n_rows, -1, np.int64) if task == "classification" else np.full(n_rows, np.nan, np.float32)


def distill_loss(task: str, distill: DistillSpec, masked: bool = False) -> LossSpec:
    """The distilled student's objective for this task: regression students match the compressed
    values (``soft_targets``) whatever ``distill.objective`` says."""
    if task == "regression":
        return LossSpec("regression", alpha=distill.alpha, masked=masked)
    return LossSpec(
        "classification",
        alpha=distill.alpha,
        temperature=distill.temperature,
        t_squared=distill.t_squared,
        objective=distill.objective,
        masked=masked,
    )


@dataclass(frozen=True)
class FitResult:
    """Of one training. An ensemble teacher: ``epochs``, ``best_epoch``, ``steps`` and ``best_step``
    are the sums over its members (its training cost, and the training its kept weights embody),
    ``stop_reason`` the first member's that is not ``early_stopping`` (else ``early_stopping``),
    ``members`` each member's own; a tree teacher: boosting iterations instead of epochs and steps,
    ``stop_reason`` ``early_stopping`` or ``max_iter``."""

    epochs: int  # epochs run, a cut last one included
    best_epoch: int  # epochs run when the restored weights were evaluated (0: the initial weights)
    best_val_loss: float
    steps: int = 0  # optimiser steps run
    best_step: int = 0  # optimiser steps behind the restored weights
    stop_reason: str = "early_stopping"  # one of STOP_REASONS
    learning_rate: float | None = None  # the rate when training ended (a schedule may lower it)
    members: tuple[FitResult, ...] = ()
    train_call_path: str = ""  # how the training ran (``Trainer.path``), as the records show it


def glorot_uniform(spec: MLPSpec, n_in: int, n_out: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Initial weights made once in numpy: Glorot-uniform kernels (Keras's default), zero biases."""
    sizes = [n_in, *spec.widths, n_out]
    weights = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weights.append(rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32))
        weights.append(np.zeros(fan_out, dtype=np.float32))
    return weights


def initial_weights(spec: MLPSpec, n_in: int, n_out: int, seed: int, role: str, member: int = 0) -> list[np.ndarray]:
    """``member`` k > 0: the k-th extra member of an ensemble teacher, from a stream of its own
    (member 0 starts where a single MLP teacher does)."""
    stream = [seed, _INIT_STREAM[role]] + ([member] if member else [])
    return glorot_uniform(spec, n_in, n_out, np.random.default_rng(stream))


def batch_order(n_rows: int, batch_size: int, seed: int, epoch: int, member: int = 0) -> list[np.ndarray]:
    """The row indices of each mini-batch of one epoch: a permutation drawn from (seed, epoch), and
    for an ensemble teacher's member k > 0 from (seed, epoch, k)."""
    order = np.random.default_rng([seed, 1000 + epoch] + ([member] if member else [])).permutation(n_rows)
    return [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]


def train_rows(n_rows: int, fraction: float, seed: int) -> np.ndarray:
    """The training rows used at ``training.train_fraction``: the first ``round(fraction * n)`` of a
    permutation drawn from the seed (at least one row), in their original order. Plain numpy, so
    both frameworks train on the same rows; the subsets of one seed are nested (a smaller fraction's
    rows are all in a larger one's), as a scaling study wants."""
    if fraction >= 1.0:
        return np.arange(n_rows)
    keep = max(1, min(n_rows, round(fraction * n_rows)))
    return np.sort(np.random.default_rng([seed, 2000]).permutation(n_rows)[:keep])


@dataclass(frozen=True)
class Served:
    """A trained model ready for prediction as a serving system calls it: ``fn`` takes float32 rows
    (n, features) and returns raw outputs, logits (n, C) or values (n, 1). Every quality number and
    every inference timing goes through ``fn``; ``path`` says what it calls."""

    fn: Callable[[np.ndarray], np.ndarray]
    path: str
    n_params: int | None
    model_bytes: int  # the serialised model, in its own format
    macs_per_row: int | None = None  # multiply-accumulates per row of the dense layers
    # For a converted model (a deployment format): the largest difference from the framework's own
    # outputs that still counts as the same model, relative to max(1, max |output|) (see
    # ``deploy.check_tolerance``); None where the difference is the point (int8) or for the original.
    tolerance: float | None = None
    # Its file (``model_bytes`` long) and the file's suffix, as ``--save-models`` writes it: the
    # framework's native format, a neutral model's own, or the deployment format's.
    file: bytes | None = None
    suffix: str = ""


class Trainer(abc.ABC):
    """One model's optimiser, as the shared loop drives it. A backend implements ``step``; it may
    override ``run`` with a faster way through a whole list of batches (e.g. one compiled call)."""

    path: str = ""  # the training call path, as the records show it

    @abc.abstractmethod
    def step(self, x: np.ndarray, y: np.ndarray, t: np.ndarray | None) -> None:
        """One Adam step on a mini-batch (``t``: the compressed teacher targets, or None)."""

    @abc.abstractmethod
    def set_learning_rate(self, value: float) -> None:
        """The learning rate of the steps from now on (a schedule's doing)."""

    def run(self, x: np.ndarray, y: np.ndarray, t: np.ndarray | None, batches: list[np.ndarray]) -> None:
        """One step per batch of row indices, in order."""
        for rows in batches:
            self.step(x[rows], y[rows], None if t is None else t[rows])


class Backend(abc.ABC):
    """One framework's side of the pipeline. Models are the framework's own objects."""

    name: str
    version: str
    suffix: str  # of the file ``save`` writes

    @abc.abstractmethod
    def configure(self, seed: int, threads: int | None = None, device: str = "cpu") -> None:
        """Seed the framework, make it deterministic, set its thread count (before any op) and the
        device ('cpu' or 'gpu'; a GPU the framework cannot see is an error)."""

    determinism: str = ""  # the settings ``configure`` made for repeatable runs, as records show them

    def checkpoint(self) -> None:  # noqa: B027 - a no-op by default, not abstract: a harness may replace it
        """Called by ``fit`` before every epoch. A harness running several jobs at once replaces it
        to hold this job's training there while another job is being timed."""

    def synchronize(self) -> None:  # noqa: B027 - a no-op by default, not abstract: the backends override it
        """Wait for the device's queued work (a GPU runs asynchronously): called before a clock is
        read. Nothing to wait for on the CPU."""

    @abc.abstractmethod
    def build(self, spec: MLPSpec, weights: list[np.ndarray]):
        """A model of this architecture holding these initial weights."""

    @abc.abstractmethod
    def get_weights(self, model) -> list[np.ndarray]: ...

    @abc.abstractmethod
    def set_weights(self, model, weights: list[np.ndarray]) -> None: ...

    @abc.abstractmethod
    def trainer(self, model, loss: LossSpec, training: TrainingSpec) -> Trainer:
        """The model's Adam optimiser with torch's update rule, as a ``Trainer``."""

    @abc.abstractmethod
    def loss(self, model, loss: LossSpec, x: np.ndarray, y: np.ndarray, t: np.ndarray | None) -> float:
        """The loss on these rows, in inference mode (no dropout)."""

    @abc.abstractmethod
    def serving_fn(self, model):
        """``(fn, path)``: the fastest sensible way to call the model for prediction, as a serving
        system would (float32 numpy in, numpy out, inference mode), and a description of that path.
        Used for predictions and for every inference timing."""

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        """Raw outputs in inference mode: logits (n, C) or values (n, 1)."""
        return self.serving_fn(model)[0](np.ascontiguousarray(x, dtype=np.float32))

    @abc.abstractmethod
    def save(self, model, path: Path) -> None:
        """Write the model in the framework's native save format (a file ending in ``suffix``)."""

    def serialized(self, model) -> bytes:
        """The file of the model in the framework's native save format."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"model{self.suffix}"
            self.save(model, path)
            return path.read_bytes()

    def n_params(self, model) -> int:
        return int(sum(w.size for w in self.get_weights(model)))

    def macs_per_row(self, model) -> int:
        return int(sum(k.size for k in self.get_weights(model)[0::2]))

    def serve(self, model) -> Served:
        fn, path = self.serving_fn(model)
        file = self.serialized(model)
        return Served(
            fn, path, self.n_params(model), len(file), self.macs_per_row(model), file=file, suffix=self.suffix
        )

    def deployments(self, model, x_calibration: np.ndarray) -> dict[str, Callable[[], Served]]:
        """Per deployment format this backend offers (e.g. "onnx", "int8"), a function converting
        the model to it. ``x_calibration`` are training rows, for converters that calibrate."""
        return {}

    def ensemble(self, members: list, task: str):
        """One model of this framework computing the ensemble of these trained models: log of the
        mean of their softmax (classification; logits again), the mean of their outputs
        (regression). Its weights are the members' weights, member after member."""
        raise NotImplementedError(f"{self.name}: no ensemble teacher")


class NeutralModel(abc.ABC):
    """A trained model outside any framework (the tree teacher): the pipeline serves it itself."""

    @abc.abstractmethod
    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Raw outputs: logits (n, C) or values (n, 1), float32."""

    @abc.abstractmethod
    def serve(self) -> Served:
        """Served as the pipeline serves its models, with its file (``Served.file``)."""


def epochs_per_evaluation(n_rows: int, training: TrainingSpec) -> int:
    """The fewest whole epochs holding at least ``training.eval_steps`` optimiser steps."""
    steps_per_epoch = -(-n_rows // training.batch_size)
    return -(-training.eval_steps // steps_per_epoch)


def step_budget_for_rows(training: TrainingSpec, n_rows: int, n_labelled: int) -> TrainingSpec:
    """``training`` with its step budget scaled by ``n_rows / n_labelled``: a distilled student that
    learns from a transfer set beside its ``n_labelled`` training rows gets as many epochs of step
    budget as the scratch student, instead of 1 / (1 + size) of them (its epochs are that much longer;
    the epoch and time budgets stay as set)."""
    if n_rows <= n_labelled:
        return training
    return dataclasses.replace(training, max_steps=-(-training.max_steps * n_rows // n_labelled))


def fit(
    backend: Backend,
    model,
    loss: LossSpec,
    training: TrainingSpec,
    seed: int,
    train: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    val: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    member: int = 0,
) -> FitResult:
    """Mini-batch Adam within ``training``'s budget, evaluated every ``epochs_per_evaluation``
    epochs, with early stopping and the learning-rate schedule (see ``TrainingSpec``); restores the
    best weights. ``member``: see ``batch_order``."""
    x, y, t = train
    trainer = backend.trainer(model, loss, training)
    every, rate, start = epochs_per_evaluation(len(x), training), training.learning_rate, time.perf_counter()
    best_loss, best_epoch, best_step, best_weights = np.inf, 0, 0, backend.get_weights(model)
    # Plateaus are counted from the last improvement by more than min_delta (its loss: ``reference``).
    reference, epoch, step, since_improved, since_change = np.inf, 0, 0, 0, 0
    reason = None
    while reason is None:
        batches: list[np.ndarray] = []
        for _ in range(every):
            room = training.max_steps - step - len(batches)
            if epoch == training.epochs or room == 0:
                break
            epoch += 1
            batches += batch_order(len(x), training.batch_size, seed, epoch, member)[:room]
        backend.checkpoint()
        trainer.run(x, y, t, batches)
        step += len(batches)
        val_loss = backend.loss(model, loss, *val)
        if not np.isfinite(val_loss):
            reason = "diverged"
            break
        if val_loss < reference * (1.0 - training.min_delta):
            reference, since_improved, since_change = val_loss, 0, 0
        else:
            since_improved, since_change = since_improved + 1, since_change + 1
        if val_loss < best_loss:
            best_loss, best_epoch, best_step, best_weights = val_loss, epoch, step, backend.get_weights(model)
        if since_improved >= max(1, training.patience):
            reason = "early_stopping"
        elif step == training.max_steps:
            reason = "max_steps"
        elif epoch == training.epochs:
            reason = "max_epochs"
        elif training.time_limit and time.perf_counter() - start >= training.time_limit:
            reason = "time_limit"
        elif (
            training.lr_schedule == "plateau"
            and since_change >= training.lr_patience
            and rate > training.min_learning_rate
        ):
            rate, since_change = max(training.min_learning_rate, rate * training.lr_factor), 0
            trainer.set_learning_rate(rate)
    backend.set_weights(model, best_weights)
    return FitResult(
        epochs=epoch,
        best_epoch=best_epoch,
        best_val_loss=float(best_loss),
        steps=step,
        best_step=best_step,
        stop_reason=reason,
        learning_rate=rate,
        train_call_path=trainer.path,
    )


@dataclass
class Data:
    """Prepared arrays, identical for both frameworks: float32 features; int64 class labels or
    float32 (standardised) regression targets."""

    task: str
    n_classes: int  # 0 for regression
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    # The columns of each one-hot encoded categorical feature (``Prepared.onehot_groups``): what the
    # transfer-set generators keep one-hot.
    onehot_groups: list[list[int]] = field(default_factory=list)

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.task == "classification" else 1

    def subset(self, rows: np.ndarray) -> Data:
        """These training rows only (validation unchanged)."""
        return dataclasses.replace(self, x_train=self.x_train[rows], y_train=self.y_train[rows])


def training_data(data: Data, training: TrainingSpec, seed: int) -> Data:
    """The data every model of a run is trained on: at ``train_fraction`` < 1 (a scaling study), a
    seeded share of the training rows (``train_rows``); validation unchanged."""
    return (
        data
        if training.train_fraction >= 1.0
        else data.subset(train_rows(len(data.x_train), training.train_fraction, seed))
    )


def labelled_data(data: Data, spec: PipelineSpec, seed: int) -> tuple[Data, np.ndarray]:
    """The rows every model learns from with their labels (``training_data``), and the training rows
    that have none: with an ``unlabeled`` transfer set, a user with few labels, all but a seeded
    ``labelled_fraction`` of them (``transfer.labelled_rows``), which only the distilled student sees
    (with the teacher's outputs); otherwise none."""
    data = training_data(data, spec.training, seed)
    if spec.transfer.kind != "unlabeled":
        return data, data.x_train[:0]
    labelled = transfer.labelled_rows(len(data.x_train), spec.transfer.labelled_fraction, seed)
    return data.subset(labelled), data.x_train[~labelled]


class Pipeline:
    """Teacher -> compressor -> student, and the scratch-student baseline, in one framework."""

    def __init__(self, backend: Backend, spec: PipelineSpec, data: Data, seed: int):
        if data.task == "classification" and data.n_classes < 2:
            raise ValueError(f"classification needs at least 2 classes, got {data.n_classes}")
        data, self.unlabelled = labelled_data(data, spec, seed)
        self.backend, self.spec, self.data, self.seed = backend, spec, data, seed

    def new_model(self, role: str):
        mlp = self.spec.teacher if role == "teacher" else self.spec.student
        return self.backend.build(
            mlp, initial_weights(mlp, self.data.x_train.shape[1], self.data.n_outputs, self.seed, role)
        )

    def _fit(self, model, loss: LossSpec, t_val=None, member: int = 0, train=None, training=None) -> FitResult:
        """On ``train`` = (x, y, t), by default the training rows without targets; within ``training``,
        by default the spec's."""
        d = self.data
        return fit(
            self.backend,
            model,
            loss,
            training or self.spec.training,
            self.seed,
            train or (d.x_train, d.y_train, None),
            (d.x_val, d.y_val, t_val),
            member,
        )

    def fit_teacher(self):
        """The teacher of ``spec.teacher.kind`` (``teachers.py``): a framework model, or a
        ``NeutralModel`` (the same in every framework)."""
        return TEACHER_KINDS[self.spec.teacher.kind].fit(self)

    def compress(self, teacher) -> tuple[Compressor, np.ndarray, np.ndarray]:
        """Fit the compressor on the training split; the student's targets for train and val. Targets
        that are not all finite (e.g. a temperature so small that ``z / T`` overflows) are an error:
        no student could be trained on them."""
        teacher_train = self.outputs(teacher, self.data.x_train)
        compressor = fit_compressor(self.data.task, self.spec.distill, teacher_train, self.data.y_train)
        targets = compressor.apply(teacher_train), compressor.apply(self.outputs(teacher, self.data.x_val))
        if not all(np.isfinite(t).all() for t in targets):
            raise ValueError(f"the {compressor.kind} compressor gave non-finite student targets")
        return (compressor, *targets)

    def transfer_set(self, teacher, compressor: Compressor) -> transfer.TransferSet:
        """The distilled student's rows without labels (``spec.transfer``: generated from the
        training rows, the unlabelled rows, or none) and the teacher's targets on them, through the
        compressor fitted on the training rows; timed."""
        spec, start = self.spec.transfer, time.perf_counter()
        if spec.kind in GENERATORS:
            x = transfer.generate(spec, self.data.x_train, self.data.onehot_groups, self.seed)
        else:
            x = self.unlabelled
        generated = time.perf_counter()
        if len(x):
            targets = compressor.apply(self.outputs(teacher, x))
        else:  # (a tree teacher cannot be called on no rows)
            targets = np.zeros((0, self.data.n_classes) if self.data.task == "classification" else 0, np.float32)
        return transfer.TransferSet(spec.kind, x, targets, generated - start, time.perf_counter() - generated)

    def fit_student_kd(
        self, targets_train: np.ndarray, targets_val: np.ndarray, extra: transfer.TransferSet | None = None
    ):
        """On the training rows with their labels and targets, and on ``extra``'s rows (a transfer
        set) with their targets alone (``LossSpec.masked``)."""
        model = self.new_model("student_kd")
        d = self.data
        x, y, t = d.x_train, d.y_train, targets_train
        masked = extra is not None and len(extra.x) > 0
        if masked and extra is not None:  # (the second test: for the type checker)
            x, y, t = (
                np.concatenate([x, extra.x]),
                np.concatenate([y, no_labels(d.task, len(extra.x))]),
                np.concatenate([t, extra.targets]),
            )
        loss = distill_loss(d.task, self.spec.distill, masked)
        training = step_budget_for_rows(self.spec.training, len(x), len(d.x_train))
        return model, self._fit(model, loss, t_val=targets_val, train=(x, y, t), training=training)

    def fit_student_scratch(self):
        model = self.new_model("student_scratch")
        return model, self._fit(model, LossSpec(self.data.task))

    def serve(self, model) -> Served:
        return model.serve() if isinstance(model, NeutralModel) else self.backend.serve(model)

    def deployments(self, model) -> dict[str, Callable[[], Served]]:
        if isinstance(model, NeutralModel):  # a tree teacher has no ONNX/int8 conversion here
            return {}
        return self.backend.deployments(model, self.data.x_train)

    def outputs(self, model, x: np.ndarray) -> np.ndarray:
        """Logits (n, C) for classification, values (n,) for regression."""
        if isinstance(model, NeutralModel):
            out = model.outputs(np.ascontiguousarray(x, dtype=np.float32))
        else:
            out = self.backend.predict(model, x)
        return out if self.data.task == "classification" else out[:, 0]

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, C), or standardised regression values (n,)."""
        out = self.outputs(model, x)
        return softmax(out) if self.data.task == "classification" else out
