"""distillbench: knowledge distillation benchmarks on tabular data, in PyTorch and TensorFlow/Keras."""

__version__ = "0.1.0"
