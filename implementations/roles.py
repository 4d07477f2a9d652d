"""The registry of roles: every model a job trains, in display order, and the formats each is measured in.

A record's ``role`` is a model role (``teacher``, ``student_kd``, ...), or a deployment role
``<model role>_<format>`` (``student_kd_onnx``): the same model converted by its backend
(``Backend.deployments``), whose record also holds ``model_role`` and ``format``. Tables, figures,
``compare`` and ``history`` list roles in the order of ``MODEL_ROLES``, each model's deployment
roles after it. Adding a role is one entry in ``MODEL_ROLES`` (the pipeline must then train it).

The reference roles (``REFERENCE_ROLES``: ``linear``, ``hgb``; ``implementations/references.py``) are
framework-independent models fitted once per (dataset, seed), in a job of their own whose framework
is ``REFERENCE`` (no torch or TensorFlow in it); they are shown after the model roles.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name: str
    colour: str  # in the report's figures; a deployment role takes its model's
    student: bool = False  # a student: its retention, speed-up and compression are against the teacher


MODEL_ROLES = (
    Role("teacher", "#555555"),
    Role("student_kd", "#1f77b4", student=True),  # distilled: trained on the compressed teacher outputs
    Role("student_scratch", "#ff7f0e", student=True),  # the same student trained on the labels alone
)
REFERENCE_ROLES = (
    Role("linear", "#2ca02c"),  # logistic / ridge regression
    Role("hgb", "#9467bd"),  # HistGradientBoosting, early-stopped on the validation split
)
REFERENCE = "reference"  # the framework name of the reference roles' jobs and records

# The formats a model is measured in, with the marker that shows each in figures: float32 is the
# framework's own serving path (the model role's own record); the others are deployment roles.
FORMATS = {"float32": "o", "onnx": "s", "int8": "^"}

ROLES = tuple(r.name for r in MODEL_ROLES)  # what a framework's job trains
STUDENTS = tuple(r.name for r in MODEL_ROLES if r.student)
REFERENCES = tuple(r.name for r in REFERENCE_ROLES)  # what the reference job fits
ROLE_COLOURS = {r.name: r.colour for r in MODEL_ROLES + REFERENCE_ROLES}
DEPLOYMENT_FORMATS = tuple(f for f in FORMATS if f != "float32")


def split_role(role: str) -> tuple[str, str]:
    """(model role, format) of a role: ("student_kd", "onnx") for ``student_kd_onnx``; a model role,
    or a role this registry does not know, is itself in float32."""
    model, _, fmt = role.rpartition("_")
    return (model, fmt) if model in ROLES and fmt in DEPLOYMENT_FORMATS else (role, "float32")


def role_sort_key(role: str) -> tuple[int, str]:
    """Sort key: the model roles in display order, each model's deployment roles after it, then the
    reference roles, roles this registry does not know last."""
    known = ROLES + REFERENCES
    for i, base in enumerate(known):
        if role == base or role.startswith(base + "_"):
            return (i, role)
    return (len(known), role)
