"""The frameworks distillbench knows, by name. Adding one means writing a ``pipeline.Backend`` for it
and naming it here; nothing else changes."""

from __future__ import annotations

import importlib

from distillbench.errors import UserError
from distillbench.implementations.pipeline import Backend

FRAMEWORKS = {
    "torch": "distillbench.implementations.torch_backend:TorchBackend",
    "tensorflow": "distillbench.implementations.tf_backend:TensorFlowBackend",
}


def get_backend(name: str) -> Backend:
    """A fresh backend; the framework is imported only now (importing TensorFlow takes seconds)."""
    if name not in FRAMEWORKS:
        raise UserError(f"unknown framework {name!r} (known: {', '.join(FRAMEWORKS)})")
    module, cls = FRAMEWORKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
