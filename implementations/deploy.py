"""Deployment formats shared by both backends: a serialised ONNX model served by onnxruntime, a
TensorFlow Lite flatbuffer served by the TFLite interpreter, and the check of a converted model's
outputs against the framework's own.

The converters themselves (torch.onnx, tf2onnx, torch dynamic quantisation, the TFLite converter)
live in each backend; what they produce is served here. onnx, onnxruntime and tf2onnx are imported
only when a conversion runs, so importing a backend stays cheap.
"""

from __future__ import annotations

import warnings

import numpy as np

from distillbench.implementations.pipeline import Served

# An exported ONNX model must reproduce the framework's float32 outputs (logits or standardised
# regression values) on the test split within ONNX_TOLERANCE * max(1, max |framework output|): the
# same float32 network evaluated by another runtime differs only by rounding (kernels, summation
# order, fused ops), which is ~1e-6 relative here. int8 formats have no tolerance: their error is
# what they cost, recorded as max_abs_diff and agreement.
ONNX_TOLERANCE = 1e-4

# Rows of the training split the int8 converters calibrate on (TFLite's representative dataset).
CALIBRATION_ROWS = 512


class ToleranceExceeded(RuntimeError):
    """A converted model's outputs differ from the framework's by more than its tolerance."""


def check_tolerance(served: Served, converted: np.ndarray, reference: np.ndarray) -> float:
    """The largest absolute difference between a converted model's outputs and the framework's;
    raises ToleranceExceeded when ``served.tolerance`` is set and it is exceeded."""
    converted, reference = np.asarray(converted), np.asarray(reference)
    if converted.shape != reference.shape:
        raise ToleranceExceeded(f"outputs of shape {converted.shape}, the framework's are {reference.shape}")
    diff = float(np.max(np.abs(converted - reference))) if reference.size else 0.0
    if not np.isfinite(diff):
        raise ToleranceExceeded("outputs are not finite")
    if served.tolerance is not None:
        bound = served.tolerance * max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0)
        if diff > bound:
            raise ToleranceExceeded(
                f"max |output - framework output| = {diff:.3g} exceeds the tolerance {bound:.3g} "
                f"({served.tolerance:g} x max(1, max |framework output|))"
            )
    return diff


def onnx_served(
    model: bytes, threads: int | None, exporter: str, n_params: int | None, macs_per_row: int | None
) -> Served:
    """An ONNX model (serialised bytes) under onnxruntime's CPU provider, ``threads`` intra-op
    threads (onnxruntime's default, all cores, when None)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    output = session.get_outputs()[0].name

    def call(x: np.ndarray) -> np.ndarray:
        return session.run([output], {name: x})[0]

    return Served(
        call,
        f"onnxruntime {ort.__version__} InferenceSession on CPUExecutionProvider "
        f"({threads or 'default'} intra-op threads), exported by {exporter}, opset {_opset(model)}",
        n_params,
        len(model),
        macs_per_row,
        tolerance=ONNX_TOLERANCE,
        file=model,
        suffix=".onnx",
    )


def _opset(model: bytes) -> str:
    import onnx

    proto = onnx.load_model_from_string(model)
    return ",".join(str(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")) or "?"


def tflite_served(
    flatbuffer: bytes, threads: int | None, how: str, n_params: int | None, macs_per_row: int | None
) -> Served:
    """A TensorFlow Lite flatbuffer under ``tf.lite.Interpreter``; the input is resized when the
    batch size changes, one interpreter per batch size (allocating tensors costs more than a call)."""
    import tensorflow as tf

    interpreters = {}

    def interpreter(n: int):
        if n not in interpreters:
            with warnings.catch_warnings():  # tf.lite.Interpreter warns that it moves to ai-edge-litert
                warnings.simplefilter("ignore")
                it = tf.lite.Interpreter(model_content=flatbuffer, num_threads=threads or None)
            inp = it.get_input_details()[0]
            it.resize_tensor_input(inp["index"], [n, *inp["shape"][1:]], strict=False)
            it.allocate_tensors()
            interpreters[n] = (it, inp["index"], it.get_output_details()[0]["index"])
        return interpreters[n]

    def call(x: np.ndarray) -> np.ndarray:
        it, inp, out = interpreter(len(x))
        it.set_tensor(inp, x)
        it.invoke()
        return it.get_tensor(out)

    return Served(
        call,
        f"tf.lite.Interpreter (TF {tf.__version__}, {threads or 'default'} threads), {how}",
        n_params,
        len(flatbuffer),
        macs_per_row,
        tolerance=None,
        file=flatbuffer,
        suffix=".tflite",
    )


def calibration_rows(x: np.ndarray) -> np.ndarray:
    """The first CALIBRATION_ROWS training rows (the split is already shuffled), float32."""
    return np.ascontiguousarray(x[:CALIBRATION_ROWS], dtype=np.float32)
