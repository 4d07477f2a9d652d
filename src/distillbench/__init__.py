"""distillbench: knowledge distillation benchmarks on tabular data, in PyTorch and TensorFlow/Keras.

The Python API (``distillbench.api``: ``run``, ``report``, ``compare``, ``load``) is imported on first
use, so that ``import distillbench`` stays light.
"""

__version__ = "0.1.0"
API = ("run", "report", "compare", "load")


def __getattr__(name: str) -> object:
    if name in API:
        from distillbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'distillbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
