"""The framework-neutral pipeline spec: plain typed config shared by both implementations.

A config is a TOML file with the sections below; every field has a default, so a file only says
what it changes. Unknown sections or fields are refused, and so is every out-of-range value, with a
message naming the field (e.g. ``student.widths[0]: must be a positive integer, got -3``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from distillbench.implementations.compressors import COMPRESSORS, compressor_fields
from distillbench.implementations.objectives import OBJECTIVES
from distillbench.implementations.registry import ConfigError, with_fields
from distillbench.implementations.teachers import TEACHER_KINDS, teacher_fields

ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")
GENERATORS = ("munge", "mixup", "gaussian")  # the transfer sets whose rows are generated
TRANSFER_KINDS = ("none", *GENERATORS, "unlabeled")


@dataclass(frozen=True)
class MLPSpec:
    """A multilayer perceptron: Dense(width, activation) -> Dropout for each hidden width, then a
    linear output layer. ``widths = []`` is a linear model."""

    widths: list[int] = field(default_factory=lambda: [256, 256, 128])
    activation: str = "relu"
    dropout: float = 0.0

    def validate(self, where: str) -> None:
        for i, width in enumerate(self.widths):
            if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
                raise ConfigError(f"{where}.widths[{i}]: must be a positive integer, got {width!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"{where}.activation: must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}.dropout: must be in [0, 1), got {self.dropout!r}")


@dataclass(frozen=True)
@with_fields(teacher_fields())
class TeacherSpec(MLPSpec):
    """Stage 1: ``kind`` names a teacher kind (``teachers.py``: ``mlp``, ``residual_mlp``,
    ``ensemble``, ``hist_gradient_boosting``; each class's docstring says what it is). After it come
    the fields that the kinds declare, each used by its kind only: set with another kind it is
    refused (``members``: ensemble; ``max_iter``, ``learning_rate``, ``max_leaf_nodes``:
    hist_gradient_boosting)."""

    kind: str = "mlp"

    if TYPE_CHECKING:  # the fields declared by the teacher kinds

        def __getattr__(self, name: str) -> Any: ...

    def validate(self, where: str) -> None:
        super().validate(where)
        kind = TEACHER_KINDS.known(self.kind, f"{where}.kind")
        for name, declared in teacher_fields().items():
            declared.check(f"{where}.{name}", getattr(self, name))
        for owner in TEACHER_KINDS.values():
            for name, declared in owner.FIELDS.items():
                if name not in kind.FIELDS and getattr(self, name) != declared.default:
                    raise ConfigError(f"{where}.{name}: used only by kind = {owner.NAME!r}, not {self.kind!r}")
        kind.check(self, where)


def residual_skips(spec: MLPSpec) -> list[bool]:
    """Per hidden layer, whether it has an identity skip connection: only in a ``residual_mlp``
    teacher, every hidden layer after the first whose width equals the previous layer's."""
    residual = getattr(spec, "kind", "mlp") == "residual_mlp"
    return [residual and i > 0 and width == spec.widths[i - 1] for i, width in enumerate(spec.widths)]


def _default_student() -> MLPSpec:
    return MLPSpec(widths=[32], dropout=0.0)


def _default_teacher() -> TeacherSpec:
    return TeacherSpec(widths=[256, 256, 128], dropout=0.1)


@dataclass(frozen=True)
@with_fields(compressor_fields())
class DistillSpec:
    """Stage 2 (compressor) and the student's loss; then the fields that the compressors declare
    (``compressors.py``: ``topk``, ``bits``).

    Classification: ``alpha * CE(y, s) + (1 - alpha) * T^2 * KL(q || softmax(s / T))`` where ``q`` is
    the compressed teacher distribution at temperature T. The T^2 factor (Hinton et al. 2015) keeps
    the soft-target gradients on the same scale as the hard-label ones as T changes; ``t_squared =
    false`` drops it. Binary tasks use two logits and a softmax, so the same formula applies.
    Regression: ``alpha * MSE(y, s) + (1 - alpha) * MSE(y_compressed, s)``.

    ``objective`` names the distillation objective of a classification student (``objectives.py``:
    ``soft_targets``, ``logit_matching``, ``hard_labels``; each one's docstring says what it is);
    regression students match the compressed values whatever it says. An objective with targets of
    its own (the teacher's logits, or its class) replaces the compressor, which is then refused.
    """

    alpha: float = 0.5
    temperature: float = 4.0
    t_squared: bool = True
    objective: str = "soft_targets"
    classification_compressor: str = "temperature"
    regression_compressor: str = "affine"

    if TYPE_CHECKING:  # the fields declared by the compressors

        def __getattr__(self, name: str) -> Any: ...

    def validate(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"distill.alpha: must be in [0, 1], got {self.alpha!r}")
        if not 0 < self.temperature < math.inf:
            raise ConfigError(f"distill.temperature: must be > 0 and finite, got {self.temperature!r}")
        COMPRESSORS["classification"].known(self.classification_compressor, "distill.classification_compressor")
        COMPRESSORS["regression"].known(self.regression_compressor, "distill.regression_compressor")
        for name, declared in compressor_fields().items():
            declared.check(f"distill.{name}", getattr(self, name))
        objective = OBJECTIVES.known(self.objective, "distill.objective")
        if objective.targets and self.classification_compressor != "temperature":
            raise ConfigError(
                f"distill.classification_compressor: not used by objective {self.objective!r}, "
                f"whose targets are the teacher's {objective.targets} (no compressor is applied)"
            )


MAX_TRANSFER_SIZE = 64  # times the training rows: a transfer set is held in memory, with its teacher targets


@dataclass(frozen=True)
class TransferSpec:
    """Extra rows for the distilled student only, labelled by the teacher through the compressor
    (``implementations/transfer.py``). On them the student's loss is the teacher term alone. ``kind``:

    - ``none``: the training rows only;
    - ``munge`` (Bucila, Caruana & Niculescu-Mizil 2006): each training row with, per attribute and
      with probability ``p``, its nearest neighbour's value (continuous: drawn from a normal around
      it with sd ``|a - b| / s``; a one-hot group moves as one attribute);
    - ``mixup``: ``lam * a + (1 - lam) * b`` for random pairs of training rows, ``lam ~
      Beta(mixup_alpha, mixup_alpha)``;
    - ``gaussian``: training rows plus normal noise of sd ``noise_sd`` in the standardised space
      (each one-hot group snapped back to its nearest one-hot, the largest value);
    - ``unlabeled``: labels on a seeded ``labelled_fraction`` of the training rows only: the
      teacher and both students train on those, the distilled student also gets the teacher's
      outputs on the rest.

    munge, mixup and gaussian make ``size`` times the training rows (0: none). A field that only
    other kinds use is refused when set."""

    kind: str = "none"
    size: float = 1.0
    p: float = 0.5
    s: float = 1.0
    mixup_alpha: float = 1.0
    noise_sd: float = 0.1
    labelled_fraction: float = 0.1

    USED_BY: ClassVar[dict[str, tuple[str, ...]]] = {
        "size": GENERATORS,
        "p": ("munge",),
        "s": ("munge",),
        "mixup_alpha": ("mixup",),
        "noise_sd": ("gaussian",),
        "labelled_fraction": ("unlabeled",),
    }

    def validate(self) -> None:
        if self.kind not in TRANSFER_KINDS:
            raise ConfigError(f"transfer.kind: unknown transfer set {self.kind!r} (known: {', '.join(TRANSFER_KINDS)})")
        if not 0 <= self.size <= MAX_TRANSFER_SIZE:
            raise ConfigError(
                f"transfer.size: must be in [0, {MAX_TRANSFER_SIZE}] (times the training rows), got {self.size!r}"
            )
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"transfer.p: must be in [0, 1], got {self.p!r}")
        for name in ("s", "mixup_alpha"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"transfer.{name}: must be > 0 and finite, got {getattr(self, name)!r}")
        if not 0 <= self.noise_sd < math.inf:
            raise ConfigError(f"transfer.noise_sd: must be >= 0 and finite, got {self.noise_sd!r}")
        if not 0.0 < self.labelled_fraction < 1.0:
            raise ConfigError(f"transfer.labelled_fraction: must be in (0, 1), got {self.labelled_fraction!r}")
        defaults = TransferSpec()
        for name, kinds in self.USED_BY.items():
            if self.kind not in kinds and getattr(self, name) != getattr(defaults, name):
                raise ConfigError(
                    f"transfer.{name}: used only by kind {' or '.join(map(repr, kinds))}, not {self.kind!r}"
                )


LR_SCHEDULES = ("constant", "plateau")


@dataclass(frozen=True)
class TrainingSpec:
    """Mini-batch Adam with every hyperparameter explicit (the frameworks' defaults differ, e.g.
    epsilon), early stopping on the validation loss with the best weights restored, a budget in
    optimiser steps and in epochs, and a learning-rate schedule. ``pipeline.fit`` runs it.

    - **Evaluations.** The validation loss is computed after every ``k`` epochs, ``k`` the fewest
      whole epochs holding at least ``eval_steps`` optimiser steps (one epoch on a large dataset; on
      iris, one step per epoch, ``eval_steps`` epochs). So an evaluation is never less than one
      epoch nor fewer than ``eval_steps`` steps, and ``patience`` and ``lr_patience``, counted in
      evaluations, mean at least that many epochs and ``eval_steps`` times as many steps: a plateau
      is judged on the same amount of training on small and large data.
    - **Improvement**: a validation loss below ``(1 - min_delta)`` times the loss of the last
      improvement (relative, as torch's ``ReduceLROnPlateau`` threshold): training goes on while the
      loss falls by more than ``min_delta`` within every ``patience`` evaluations. The weights
      restored are those of the lowest loss seen, whatever ``min_delta``.
    - **Stop reasons**: ``early_stopping`` (``patience`` evaluations without improvement),
      ``max_steps`` (``max_steps`` optimiser steps; the epoch they end in is cut), ``max_epochs``
      (``epochs`` epochs), ``time_limit`` (``time_limit`` seconds of this model's training,
      checked after each evaluation; 0 = none), ``diverged`` (a validation loss that is NaN or
      infinite: training stops there and the best weights before it are kept). Whatever the
      reason, the best weights are restored. A distilled student that learns from a transfer set
      has ``max_steps`` times (training + transfer rows) / training rows: the same epochs' worth of
      steps as without one (``pipeline.step_budget_for_rows``).
    - **Schedule** ``lr_schedule``: ``constant``, or ``plateau``: after ``lr_patience`` evaluations
      without improvement (since the last improvement or reduction), the rate is multiplied by
      ``lr_factor``, never below ``min_learning_rate``. ``lr_factor``, ``lr_patience`` and
      ``min_learning_rate`` are used only by ``plateau``.
    """

    # The defaults were chosen from measurements (README, "Training"): every model trained to
    # convergence on datasets of 150 to 40,000 rows, at a bounded cost.
    epochs: int = 50_000  # epochs at most; as many as max_steps, so that the step budget binds first
    max_steps: int = 50_000  # optimiser steps at most
    batch_size: int = 128
    learning_rate: float = 3e-3  # the initial rate; the plateau schedule lowers it
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    eval_steps: int = 25  # fewest optimiser steps between two evaluations (whole epochs, at least one)
    patience: int = 30  # evaluations without improvement before stopping
    min_delta: float = 1e-3  # relative improvement of the validation loss that counts
    lr_schedule: str = "plateau"
    lr_factor: float = 0.3
    lr_patience: int = 10  # evaluations without improvement before the rate is reduced
    min_learning_rate: float = 1e-5
    time_limit: float = 0.0  # seconds of training per model at most; 0 = no limit
    train_fraction: float = 1.0  # share of the training rows used: a seeded subset (pipeline.train_rows)

    def validate(self) -> None:
        for name in ("epochs", "max_steps", "batch_size", "eval_steps", "patience", "lr_patience"):
            value, least = getattr(self, name), 0 if name == "patience" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(
                    f"training.{name}: must be a {'non-negative' if least == 0 else 'positive'} integer, got {value!r}"
                )
        for name in ("learning_rate", "min_learning_rate"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"training.{name}: must be > 0 and finite, got {getattr(self, name)!r}")
        for name in ("beta_1", "beta_2", "min_delta"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"training.{name}: must be in [0, 1), got {getattr(self, name)!r}")
        if not 0 < self.epsilon < math.inf:
            raise ConfigError(f"training.epsilon: must be > 0 and finite, got {self.epsilon!r}")
        if not 0.0 <= self.time_limit < math.inf:
            raise ConfigError(
                f"training.time_limit: must be >= 0 (seconds, 0 = no limit) and finite, got {self.time_limit!r}"
            )
        if not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError(f"training.train_fraction: must be in (0, 1], got {self.train_fraction!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"training.lr_schedule: must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if not 0.0 < self.lr_factor < 1.0:
            raise ConfigError(f"training.lr_factor: must be in (0, 1), got {self.lr_factor!r}")
        if self.lr_schedule == "plateau" and self.min_learning_rate > self.learning_rate:
            raise ConfigError(
                f"training.min_learning_rate: must be at most training.learning_rate "
                f"({self.learning_rate!r}), got {self.min_learning_rate!r}"
            )
        if self.lr_schedule != "plateau":
            for name in ("lr_factor", "lr_patience", "min_learning_rate"):
                default = next(f.default for f in dataclasses.fields(TrainingSpec) if f.name == name)
                if getattr(self, name) != default:
                    raise ConfigError(
                        f"training.{name}: used only by lr_schedule = 'plateau', not {self.lr_schedule!r}"
                    )


@dataclass(frozen=True)
class PipelineSpec:
    """Teacher (stage 1), compressor and student loss (stage 2 and 3), training settings."""

    name: str = "default"
    teacher: TeacherSpec = field(default_factory=_default_teacher)
    student: MLPSpec = field(default_factory=_default_student)
    distill: DistillSpec = field(default_factory=DistillSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    transfer: TransferSpec = field(default_factory=TransferSpec)
    # A grid of configurations: dotted field path ("distill.temperature") -> the values to try, in the
    # file's order. Empty: one configuration, this spec. See ``variants()``.
    sweep: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if type(self.teacher) is MLPSpec:  # a plain MLP given as the teacher: kind "mlp"
            object.__setattr__(self, "teacher", TeacherSpec(**dataclasses.asdict(self.teacher)))

    def validate(self) -> PipelineSpec:
        self.teacher.validate("teacher")
        self.student.validate("student")
        self.distill.validate()
        self.training.validate()
        self.transfer.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not data["sweep"]:  # a config without a sweep reads as it did before sweeps existed
            del data["sweep"]
        if self.transfer == TransferSpec():  # likewise without a transfer set
            del data["transfer"]
        return data

    def variants(self) -> list[Variant]:
        """The configurations of the sweep: the Cartesian product of its grids, the first key varying
        slowest (the file's order). Without a sweep, one variant: label None, params {}, this spec."""
        if not self.sweep:
            return [Variant(None, {}, self)]
        base = dataclasses.replace(self, sweep={})
        short = _short_names(list(self.sweep))
        out = []
        for values in itertools.product(*self.sweep.values()):
            params = dict(zip(self.sweep, values))
            label = ", ".join(f"{short[path]}={_label_value(value)}" for path, value in params.items())
            out.append(Variant(label, params, _with_value(base, params)))
        return out

    def replace(self, **sections: Any) -> PipelineSpec:
        """A copy with some sections replaced, e.g. ``spec.replace(training=...)``."""
        return dataclasses.replace(self, **sections).validate()


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a dict, refusing unknown fields and wrong types by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a table, got {data!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in known:
            raise ConfigError(f"{path}: unknown field (known: {', '.join(known)})")
        declared = known[key]
        default = (
            declared.default_factory() if declared.default_factory is not dataclasses.MISSING else declared.default
        )
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value, path)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: must be true or false, got {value!r}")
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(default, list):
            if not isinstance(value, list):
                raise ConfigError(f"{path}: must be a list, got {value!r}")
        elif not isinstance(value, type(default)) or isinstance(value, bool):
            raise ConfigError(f"{path}: must be of type {type(default).__name__}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class Variant:
    """One configuration of a sweep: a short readable label ("temperature=2, alpha=0.3"; None
    without a sweep), the swept values by dotted path, and the full spec."""

    label: str | None
    params: dict[str, Any]
    spec: PipelineSpec


MAX_VARIANTS = 256


def _sections(spec: PipelineSpec) -> list[str]:
    """The sections a sweep may change: every table of the spec (teacher, student, distill, training...)."""
    return [f.name for f in dataclasses.fields(spec) if dataclasses.is_dataclass(getattr(spec, f.name))]


def _short_names(paths: list[str]) -> dict[str, str]:
    """The field name alone ("temperature"), or the whole path where two paths share a field name."""
    last = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (n if last.count(n) == 1 else p) for p, n in zip(paths, last)}


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_label_value(v) for v in value) + "]"
    return str(value)


def _with_value(spec: PipelineSpec, params: dict[str, Any]) -> PipelineSpec:
    """``spec`` with these dotted paths set (types checked and the whole spec validated)."""
    data = spec.to_dict()
    for path, value in params.items():
        section, name = path.split(".")
        data.setdefault(section, {})[name] = value  # to_dict leaves out a default [transfer]
    return _build(PipelineSpec, data, "").validate()


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """``{"distill": {"alpha": [..]}}`` (TOML's unquoted dotted keys) as ``{"distill.alpha": [..]}``."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _parse_sweep(base: PipelineSpec, table: Any) -> dict[str, list]:
    """Check a [sweep] table against the spec: known paths, non-empty lists of distinct values, at most
    MAX_VARIANTS configurations, every value valid for its field; errors name the key and the value's
    index. The number of configurations is refused before any value is checked (linear in the values)."""
    if not isinstance(table, dict):
        raise ConfigError(f'sweep: must be a table of "section.field" = [values], got {table!r}')
    sweep = _flatten(table)
    sections = _sections(base)
    for path, values in sweep.items():
        section, _, name = path.partition(".")
        known = {f.name for f in dataclasses.fields(getattr(base, section))} if section in sections else set()
        if section not in sections or name not in known:
            fields = ", ".join(f"{s}.{f.name}" for s in sections for f in dataclasses.fields(getattr(base, s)))
            raise ConfigError(f"{_sweep_key(path)}: unknown field (known: {fields})")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{_sweep_key(path)}: must be a non-empty list of values, got {values!r}")
    count = math.prod(len(v) for v in sweep.values())
    if count > MAX_VARIANTS:
        raise ConfigError(f"sweep: {count} configurations, more than the {MAX_VARIANTS} allowed")
    for path, values in sweep.items():
        section, _, name = path.partition(".")
        checked, seen = [], set()
        for i, value in enumerate(values):
            try:
                built = _with_value(base, {path: value})
            except ConfigError as exc:
                message = str(exc).removeprefix(f"{path}: ")
                raise ConfigError(f"{_sweep_key(path)}[{i}]: {message}") from None
            held = getattr(getattr(built, section), name)  # as the spec holds it (e.g. 2 -> 2.0)
            if repr(held) in seen:
                raise ConfigError(f"{_sweep_key(path)}[{i}]: {value!r} is listed twice")
            seen.add(repr(held))
            checked.append(held)
        sweep[path] = checked
    return sweep


def _sweep_key(path: str) -> str:
    """How errors name a sweep key: sweep."distill.alpha"."""
    return f'sweep."{path}"'


def spec_from_dict(data: dict[str, Any]) -> PipelineSpec:
    data = dict(data)
    sweep = data.pop("sweep", None)
    spec = _build(PipelineSpec, data, "").validate()
    if sweep:
        spec = dataclasses.replace(spec, sweep=_parse_sweep(spec, sweep))
        spec.variants()  # every grid point, as a whole spec
    elif sweep is not None and sweep != {}:
        raise ConfigError(f'sweep: must be a table of "section.field" = [values], got {sweep!r}')
    return spec


def presets() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files(__package__).joinpath("presets").iterdir()
        if p.name.endswith(".toml")
    )


def load_spec(name_or_path: str | Path | None = None) -> PipelineSpec:
    """The spec from a TOML file path, or from a preset name (see ``presets()``); None is 'default'."""
    name_or_path = name_or_path or "default"
    path = Path(name_or_path)
    if path.suffix != ".toml" and str(name_or_path) in presets():
        text = resources.files(__package__).joinpath("presets", f"{name_or_path}.toml").read_text()
        source = f"preset {name_or_path!r}"
    elif path.is_file():
        try:
            text = path.read_text(encoding="utf-8")  # TOML is UTF-8
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text, as TOML must be ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        source = str(path)
    else:
        raise ConfigError(f"{name_or_path}: no such config file or preset (presets: {', '.join(presets())})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return spec_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
