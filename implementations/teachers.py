"""Stage 1: the teacher kinds (``[teacher] kind``), each one class registered here by name.

A kind declares the config fields only it uses (added to ``[teacher]`` after the MLP's, see
``spec.TeacherSpec``; set with another kind they are refused), and says how it trains (``fit``), what
``distillbench parity`` compares for it, and how a report names it (``describe``). Every kind is
served as one model: a framework's model, or a ``NeutralModel`` that is the same in both frameworks.

The training code is in ``pipeline.py`` (the shared loop) and ``trees.py``; they import this module
(through ``spec.py``), so this one imports them where a kind uses them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from distillbench.implementations.registry import ConfigError, ConfigField, Registry, is_int, merge_fields

if TYPE_CHECKING:
    from distillbench.implementations.pipeline import Backend, FitResult, Pipeline
    from distillbench.implementations.spec import TeacherSpec


class TeacherKind:
    """A kind of teacher. A subclass implements ``fit`` and ``describe``; the other hooks default to
    a framework model that parity compares as it is, with no checks beyond its fields' own."""

    NAME: ClassVar[str]
    FIELDS: ClassVar[dict[str, ConfigField]]  # the [teacher] fields only this kind uses
    # False: one framework-independent model, the same object for both frameworks: parity has no
    # teacher case for it.
    in_parity: ClassVar[bool] = True

    def check(self, teacher: TeacherSpec, where: str) -> None:
        """Checks of ``teacher`` beyond each field's own rule (which ``TeacherSpec.validate`` makes)."""

    def fit(self, pipeline: Pipeline) -> tuple[Any, FitResult]:
        """The trained teacher (a framework model, or a ``NeutralModel``) and how it trained."""
        raise NotImplementedError

    def parity_model(self, backend: Backend, teacher: TeacherSpec, n_in: int, n_out: int, task: str, seed: int) -> Any:
        """A model whose forward pass parity compares besides the one whose steps it compares
        (a model built from the teacher's initial weights); None: that one alone."""
        return None

    def describe(self, teacher: dict) -> str:
        """The teacher of a config (as a run's manifest holds it) in a few words, for the report."""
        raise NotImplementedError


TEACHER_KINDS: Registry[TeacherKind] = Registry("teacher kind")


def register_teacher(name: str, **fields: ConfigField):
    """Class decorator: the teacher kind ``name``, with the ``[teacher]`` fields only it uses."""

    def register(cls: type[TeacherKind]) -> type[TeacherKind]:
        cls.NAME, cls.FIELDS = name, fields
        TEACHER_KINDS.add(name, cls())
        return cls

    return register


def teacher_fields() -> dict[str, ConfigField]:
    """Every field the teacher kinds declare, once each, in registration order."""
    return merge_fields({f"teacher kind {name!r}": kind.FIELDS for name, kind in TEACHER_KINDS.items()})


@register_teacher("mlp")
class MLP(TeacherKind):
    """The MLP of ``[teacher]``'s widths, activation and dropout (``spec.MLPSpec``)."""

    def fit(self, pipeline: Pipeline) -> tuple[Any, FitResult]:
        from distillbench.implementations.pipeline import LossSpec

        model = pipeline.new_model("teacher")
        return model, pipeline._fit(model, LossSpec(pipeline.data.task))

    def describe(self, teacher: dict) -> str:
        return f"{teacher.get('widths')} {teacher.get('activation')} dropout {teacher.get('dropout')}"


@register_teacher("residual_mlp")
class ResidualMLP(MLP):
    """The MLP with an identity skip, ``h + dropout(act(h W + b))``, around every hidden layer after
    the first whose width equals the previous one (widths [256, 256, 256]: 2 skips;
    ``spec.residual_skips``, which the backends build)."""

    def check(self, teacher: TeacherSpec, where: str) -> None:
        from distillbench.implementations.spec import residual_skips

        if not any(residual_skips(teacher)):
            raise ConfigError(
                f"{where}.widths: kind 'residual_mlp' needs two consecutive hidden layers of one width "
                f"(a skip connection), got {teacher.widths!r}"
            )

    def describe(self, teacher: dict) -> str:
        return f"residual MLP {super().describe(teacher)}"


@register_teacher("ensemble", members=ConfigField(5, lambda v: is_int(v) and v >= 2, "an integer >= 2"))
class Ensemble(MLP):
    """``members`` MLPs of these widths, each from its own initial weights and batch order, served as
    one model: log of the mean of the members' softmax (classification), the mean of their outputs
    (regression). Parity compares the steps of one member (each member trains alone) and the forward
    pass of the combined model."""

    def fit(self, pipeline: Pipeline) -> tuple[Any, FitResult]:
        """Each member trained alone by the shared fit loop, with its own initial weights and batch
        order (member 0 is the single MLP teacher), then combined into one model."""
        from distillbench.implementations.pipeline import FitResult, LossSpec, initial_weights

        d, mlp, loss, backend = pipeline.data, pipeline.spec.teacher, LossSpec(pipeline.data.task), pipeline.backend
        members, fits = [], []
        for k in range(mlp.members):
            model = backend.build(
                mlp, initial_weights(mlp, d.x_train.shape[1], d.n_outputs, pipeline.seed, "teacher", k)
            )
            fits.append(pipeline._fit(model, loss, member=k))
            members.append(model)
        model = backend.ensemble(members, d.task)
        val_loss = backend.loss(model, loss, d.x_val, d.y_val, None)
        reason = next((f.stop_reason for f in fits if f.stop_reason != "early_stopping"), "early_stopping")
        return model, FitResult(
            epochs=sum(f.epochs for f in fits),
            best_epoch=sum(f.best_epoch for f in fits),
            best_val_loss=float(val_loss),
            steps=sum(f.steps for f in fits),
            best_step=sum(f.best_step for f in fits),
            stop_reason=reason,
            members=tuple(fits),
            train_call_path=f"each member alone: {fits[0].train_call_path}",
        )

    def parity_model(self, backend: Backend, teacher: TeacherSpec, n_in: int, n_out: int, task: str, seed: int) -> Any:
        from distillbench.implementations.pipeline import initial_weights

        members = [initial_weights(teacher, n_in, n_out, seed, "teacher", k) for k in range(teacher.members)]
        return backend.ensemble([backend.build(teacher, w) for w in members], task)

    def describe(self, teacher: dict) -> str:
        return f"ensemble of {teacher.get('members')} MLPs {super().describe(teacher)}"


@register_teacher(
    "hist_gradient_boosting",
    max_iter=ConfigField(1000, lambda v: is_int(v) and v >= 1, "a positive integer"),
    learning_rate=ConfigField(0.1, lambda v: 0 < v < math.inf, "> 0 and finite"),
    max_leaf_nodes=ConfigField(31, lambda v: is_int(v) and v >= 2, "an integer >= 2"),
)
class HistGradientBoosting(TeacherKind):
    """scikit-learn's HistGradientBoostingClassifier/Regressor with ``max_iter``, ``learning_rate``
    and ``max_leaf_nodes`` (scikit-learn's defaults), early stopping on the validation split with
    ``training.patience`` (``trees.py``); framework-independent, so both frameworks distil the same
    teacher. The MLP fields of ``[teacher]`` are not used, and ``teacher.learning_rate`` is not the
    MLP's ``training.learning_rate``."""

    in_parity = False

    def fit(self, pipeline: Pipeline) -> tuple[Any, FitResult]:
        from distillbench.implementations import trees

        return trees.fit_teacher(
            pipeline.spec.teacher,
            pipeline.spec.training,
            pipeline.data,
            pipeline.seed,
            getattr(pipeline.backend, "threads", None),
        )

    def describe(self, teacher: dict) -> str:
        return (
            f"gradient-boosted trees (scikit-learn, max_iter {teacher.get('max_iter')}, learning_rate "
            f"{teacher.get('learning_rate')}, max_leaf_nodes {teacher.get('max_leaf_nodes')})"
        )
