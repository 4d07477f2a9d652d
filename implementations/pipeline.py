"""The three-stage pipeline, written once: what differs between the frameworks is a ``Backend``.

Everything that must be identical in PyTorch and TensorFlow lives here and is plain numpy: the
initial weights, the order of the mini-batches, the compressor, early stopping. A backend only
builds the network, runs one optimiser step, evaluates the loss and predicts.

Weights cross the boundary as a list of float32 arrays ``[W0, b0, W1, b1, ...]`` with ``W`` of shape
(fan_in, fan_out) (the Keras convention; the torch backend transposes).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from distillbench.implementations.compressors import Compressor, fit_compressor, softmax
from distillbench.implementations.spec import DistillSpec, MLPSpec, PipelineSpec, TrainingSpec
from distillbench.implementations.teachers import TEACHER_KINDS

# Each role (implementations/roles.py) draws its initial weights from its own stream of the run's seed. The two students share
# one stream: the distilled and the scratch student start from the same weights and see the same
# batches, so their difference is the teacher's doing alone.
_INIT_STREAM = {"teacher": 0, "student_kd": 1, "student_scratch": 1}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class LossSpec:
    """What a model is trained on: ``alpha * label term + (1 - alpha) * scale * teacher term`` with
    the teacher term of ``objective`` (``objectives.py``). Classification, ``soft_targets``:
    ``alpha * CE(y, s) + (1 - alpha) * scale * KL(t || softmax(s / T))`` with ``scale = T^2`` when
    ``t_squared``; regression: ``alpha * MSE(y, s) + (1 - alpha) * MSE(t, s)``. ``alpha = 1`` is
    plain supervised training (teacher, scratch student), where ``t`` is not used."""

    task: str
    alpha: float = 1.0
    temperature: float = 1.0
    t_squared: bool = True
    objective: str = "soft_targets"


def distill_loss(task: str, distill: DistillSpec) -> LossSpec:
    """The distilled student's objective for this task."""
    if task == "regression":
        return LossSpec("regression", alpha=distill.alpha)
    return LossSpec("classification", alpha=distill.alpha, temperature=distill.temperature, t_squared=distill.t_squared)


@dataclass(frozen=True)
class FitResult:
    """Of one training. An ensemble teacher: ``epochs`` and ``best_epoch`` are the sums over its
    members (its training cost in epochs, and the epochs its kept weights embody), ``members`` each
    member's own; a tree teacher: boosting iterations instead of epochs."""

    epochs: int  # epochs run (early stopping may end before the budget)
    best_epoch: int  # 1-based epoch whose weights were restored
    best_val_loss: float
    members: tuple["FitResult", ...] = ()
    train_call_path: str = ""  # how the training ran (``Trainer.path``), as the records show it


def glorot_uniform(spec: MLPSpec, n_in: int, n_out: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Initial weights made once in numpy: Glorot-uniform kernels (Keras's default), zero biases."""
    sizes = [n_in, *spec.widths, n_out]
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
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
    keep = max(1, min(n_rows, int(round(fraction * n_rows))))
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

    @abc.abstractmethod
    def configure(self, seed: int, threads: int | None = None, device: str = "cpu") -> None:
        """Seed the framework, make it deterministic, set its thread count (before any op) and the
        device ('cpu' or 'gpu'; a GPU the framework cannot see is an error)."""

    determinism: str = ""  # the settings ``configure`` made for repeatable runs, as records show them

    # Called by ``fit`` before every epoch; a harness running several jobs at once sets it to hold
    # this job's training there while another job is being timed. Nothing by default.
    checkpoint: Callable[[], None] = staticmethod(lambda: None)

    def synchronize(self) -> None:  # noqa: B027 - nothing to wait for on a CPU; GPU backends override it
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
    def serialized_size(self, model) -> int:
        """Bytes of the model in the framework's native save format."""

    def n_params(self, model) -> int:
        return int(sum(w.size for w in self.get_weights(model)))

    def macs_per_row(self, model) -> int:
        return int(sum(k.size for k in self.get_weights(model)[0::2]))

    def serve(self, model) -> Served:
        fn, path = self.serving_fn(model)
        return Served(fn, path, self.n_params(model), self.serialized_size(model), self.macs_per_row(model))

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
    def serve(self) -> Served: ...


def fit(backend: Backend, model, loss: LossSpec, training: TrainingSpec, seed: int,
        train: tuple[np.ndarray, np.ndarray, np.ndarray | None],
        val: tuple[np.ndarray, np.ndarray, np.ndarray | None], member: int = 0) -> FitResult:
    """Mini-batch Adam for at most ``training.epochs`` epochs; stops after ``patience`` epochs
    without a lower validation loss and restores the best weights. ``member``: see ``batch_order``."""
    x, y, t = train
    trainer = backend.trainer(model, loss, training)
    best_loss, best_epoch, best_weights, epoch = np.inf, 0, backend.get_weights(model), 0
    for epoch in range(1, training.epochs + 1):
        backend.checkpoint()
        trainer.run(x, y, t, batch_order(len(x), training.batch_size, seed, epoch, member))
        val_loss = backend.loss(model, loss, *val)
        if not np.isfinite(val_loss):
            raise TrainingDiverged(f"validation loss is {val_loss} at epoch {epoch}")
        if val_loss < best_loss:
            best_loss, best_epoch, best_weights = val_loss, epoch, backend.get_weights(model)
        elif epoch - best_epoch >= training.patience:
            break
    backend.set_weights(model, best_weights)
    return FitResult(epochs=epoch, best_epoch=best_epoch, best_val_loss=float(best_loss), train_call_path=trainer.path)


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

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.task == "classification" else 1

    def subset(self, rows: np.ndarray) -> "Data":
        """These training rows only (validation unchanged)."""
        return Data(self.task, self.n_classes, self.x_train[rows], self.y_train[rows], self.x_val, self.y_val)


class Pipeline:
    """Teacher -> compressor -> student, and the scratch-student baseline, in one framework."""

    def __init__(self, backend: Backend, spec: PipelineSpec, data: Data, seed: int):
        if data.task == "classification" and data.n_classes < 2:
            raise ValueError(f"classification needs at least 2 classes, got {data.n_classes}")
        if spec.training.train_fraction < 1.0:  # a scaling study: a seeded share of the training rows
            data = data.subset(train_rows(len(data.x_train), spec.training.train_fraction, seed))
        self.backend, self.spec, self.data, self.seed = backend, spec, data, seed

    def new_model(self, role: str):
        mlp = self.spec.teacher if role == "teacher" else self.spec.student
        return self.backend.build(mlp, initial_weights(mlp, self.data.x_train.shape[1], self.data.n_outputs, self.seed, role))

    def _fit(self, model, loss: LossSpec, t_train=None, t_val=None, member: int = 0) -> FitResult:
        d = self.data
        return fit(self.backend, model, loss, self.spec.training, self.seed,
                   (d.x_train, d.y_train, t_train), (d.x_val, d.y_val, t_val), member)

    def fit_teacher(self):
        """The teacher of ``spec.teacher.kind`` (``teachers.py``): a framework model, or a
        ``NeutralModel`` (the same in every framework)."""
        return TEACHER_KINDS[self.spec.teacher.kind].fit(self)

    def compress(self, teacher) -> tuple[Compressor, np.ndarray, np.ndarray]:
        """Fit the compressor on the training split; the student's targets for train and val."""
        teacher_train = self.outputs(teacher, self.data.x_train)
        compressor = fit_compressor(self.data.task, self.spec.distill, teacher_train, self.data.y_train)
        return compressor, compressor.apply(teacher_train), compressor.apply(self.outputs(teacher, self.data.x_val))

    def fit_student_kd(self, targets_train: np.ndarray, targets_val: np.ndarray):
        model = self.new_model("student_kd")
        return model, self._fit(model, distill_loss(self.data.task, self.spec.distill), targets_train, targets_val)

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
