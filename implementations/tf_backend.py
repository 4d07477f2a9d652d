"""The TensorFlow/Keras side of the pipeline (see ``pipeline.Backend``).

Training runs each epoch in one ``tf.function`` (a loop of ``GradientTape`` steps with Keras's
Adam); prediction calls the model inside a ``tf.function`` (``Model.predict`` costs milliseconds per call).

Keras's Adam adds epsilon to sqrt(v) before the bias correction, torch's after it (Kingma & Ba's
Algorithm 1), so the same epsilon gives different steps wherever a gradient is near epsilon (dead
ReLU units, late training). ``TextbookAdam`` makes the Keras update the torch one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import warnings

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # hides the oneDNN notice; changes no result

import keras
import numpy as np
import tensorflow as tf

from distillbench.implementations import deploy
from distillbench.implementations.objectives import OBJECTIVES
from distillbench.implementations.pipeline import Backend, LossSpec, Served, Trainer
from distillbench.implementations.spec import MLPSpec, TrainingSpec, residual_skips


def _soft_targets(spec: LossSpec):
    def squared_error(out, t):
        return tf.square(out[:, 0] - t)

    def kl(out, t):  # xlogy: 0 log 0 = 0
        return tf.reduce_sum(tf.math.xlogy(t, t) - t * tf.nn.log_softmax(out / spec.temperature, axis=1), axis=1)

    return squared_error if spec.task == "regression" else kl


def _logit_matching(spec: LossSpec):
    def squared_error(out, t):
        return tf.reduce_mean(tf.square(out - t), axis=1)

    return squared_error


def _hard_labels(spec: LossSpec):
    def cross_entropy(out, t):
        return -tf.reduce_sum(t * tf.nn.log_softmax(out, axis=1), axis=1)

    return cross_entropy


# Per objective of objectives.OBJECTIVES, by name: the teacher term of each row (as in torch_backend).
TEACHER_TERMS = {"soft_targets": _soft_targets, "logit_matching": _logit_matching, "hard_labels": _hard_labels}


def loss_fn(spec: LossSpec):
    """The training objective as a function of (outputs, y, t); see ``LossSpec`` and ``objectives.py``."""
    teacher_term, scale = TEACHER_TERMS[spec.objective](spec), OBJECTIVES[spec.objective].scale(spec)

    def masked(out, y, t):  # rows without a label (y: -1 or NaN) get the teacher term alone
        if spec.task == "regression":
            labelled = tf.math.is_finite(y)
            label = tf.square(out[:, 0] - tf.where(labelled, y, tf.zeros_like(y)))  # no NaN reaches a gradient
        else:
            labelled = y >= 0
            label = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.where(labelled, y, tf.zeros_like(y)), logits=out
            )
        w = spec.alpha * tf.cast(labelled, out.dtype)
        return tf.reduce_mean(w * label + (1.0 - w) * scale * teacher_term(out, t))

    def objective(out, y, t):
        if spec.masked:
            return masked(out, y, t)
        if spec.task == "regression":
            loss = spec.alpha * tf.reduce_mean(tf.square(out[:, 0] - y))
        else:
            loss = spec.alpha * tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out))
        return loss if spec.alpha == 1.0 else loss + (1.0 - spec.alpha) * scale * tf.reduce_mean(teacher_term(out, t))

    return objective


class TextbookAdam(keras.optimizers.Adam):
    """Keras's Adam with epsilon added after the bias correction, exactly as torch.optim.Adam:
    ``var -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``."""

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        gradient = tf.cast(gradient, dtype)
        self.assign_add(m, (gradient - m) * (1 - self.beta_1))
        self.assign_add(v, (tf.square(gradient) - v) * (1 - self.beta_2))
        denom = tf.sqrt(v) / tf.sqrt(1 - tf.pow(tf.cast(self.beta_2, dtype), step)) + self.epsilon
        step_size = tf.cast(learning_rate, dtype) / (1 - tf.pow(tf.cast(self.beta_1, dtype), step))
        self.assign_sub(variable, step_size * m / denom)


@keras.saving.register_keras_serializable(package="distillbench")
class EnsembleMean(keras.layers.Layer):
    """The members' outputs (a list) as one: log of the mean of their softmax (classification), or
    their mean (regression)."""

    def __init__(self, classification: bool, **kwargs):
        super().__init__(**kwargs)
        self.classification = classification

    def call(self, outputs):
        out = keras.ops.stack(outputs, axis=0)
        if self.classification:
            return keras.ops.logsumexp(keras.ops.log_softmax(out, axis=-1), axis=0) - math.log(len(outputs))
        return keras.ops.mean(out, axis=0)

    def get_config(self):
        return {**super().get_config(), "classification": self.classification}


def _with_forward(model: keras.Model, n_in: int) -> keras.Model:
    # One trace for every batch size: no retracing between single rows and large batches.
    model.forward = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, n_in], tf.float32)]
    )
    return model


class TensorFlowBackend(Backend):
    name = "tensorflow"
    version = tf.__version__
    suffix = ".keras"
    threads: int | None = None
    device = "cpu"

    def configure(self, seed: int, threads: int | None = None, device: str = "cpu") -> None:
        gpus = tf.config.list_physical_devices("GPU")
        if device == "gpu" and not gpus:
            raise RuntimeError(
                "--device gpu: TensorFlow sees no GPU (tensorflow-cpu installed? see the README's GPU section)"
            )
        try:
            if device == "cpu":
                tf.config.set_visible_devices([], "GPU")
            for gpu in gpus if device == "gpu" else ():  # memory as needed: several workers may share a GPU
                tf.config.experimental.set_memory_growth(gpu, True)
            if threads:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TF already ran an op in this process: the first job's settings stay
            pass
        self.threads = threads  # also the deployment runtimes' (onnxruntime, the TFLite interpreter)
        keras.backend.clear_session()  # a worker runs several jobs: start each from a clean state
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        self.determinism = "keras.utils.set_random_seed, tf.config.experimental.enable_op_determinism()"
        self.device = device
        if device == "gpu":  # TF32 matmuls (Ampere and later) would round differently from the CPU and torch
            tf.config.experimental.enable_tensor_float_32_execution(False)
            self.determinism += (
                ", TF32 off (on GPU: TensorFlow's documented settings, not checked by this project's tests)"
            )

    def synchronize(self) -> None:
        if self.device == "gpu":
            tf.test.experimental.sync_devices()

    def build(self, spec: MLPSpec, weights: list[np.ndarray]) -> keras.Model:
        skips = residual_skips(spec)
        if any(skips):  # a functional model: Dense -> Dropout -> Add(skip) per hidden layer
            x = inputs = keras.Input(shape=(weights[0].shape[0],))
            for width, skip in zip(spec.widths, skips):
                h = keras.layers.Dense(width, activation=spec.activation)(x)
                if spec.dropout:
                    h = keras.layers.Dropout(spec.dropout)(h)
                x = keras.layers.Add()([x, h]) if skip else h
            model = keras.Model(inputs, keras.layers.Dense(weights[-1].shape[0])(x))
            model.set_weights(weights)
            return _with_forward(model, weights[0].shape[0])
        layers: list = [keras.Input(shape=(weights[0].shape[0],))]
        for width in spec.widths:
            layers.append(keras.layers.Dense(width, activation=spec.activation))
            if spec.dropout:
                layers.append(keras.layers.Dropout(spec.dropout))
        layers.append(keras.layers.Dense(weights[-1].shape[0]))
        model = keras.Sequential(layers)
        model.set_weights(weights)
        return _with_forward(model, weights[0].shape[0])

    def ensemble(self, members: list, task: str) -> keras.Model:
        inputs = keras.Input(shape=(members[0].input_shape[-1],))
        model = keras.Model(inputs, EnsembleMean(task == "classification")([member(inputs) for member in members]))
        return _with_forward(model, members[0].input_shape[-1])

    def save(self, model, path) -> None:
        model.save(path)

    def get_weights(self, model) -> list[np.ndarray]:
        return [w.copy() for w in model.get_weights()]

    def set_weights(self, model, weights: list[np.ndarray]) -> None:
        model.set_weights(weights)

    def trainer(self, model, loss: LossSpec, training: TrainingSpec):
        optimizer = TextbookAdam(
            learning_rate=training.learning_rate,
            beta_1=training.beta_1,
            beta_2=training.beta_2,
            epsilon=training.epsilon,
        )
        optimizer.build(model.trainable_variables)
        return _TFTrainer(model, optimizer, loss_fn(loss))

    def loss(self, model, loss: LossSpec, x, y, t) -> float:
        return float(loss_fn(loss)(model.forward(x), y, t))

    def serving_fn(self, model):
        return (lambda x: model.forward(x).numpy()), "tf.function(model(x, training=False)), not Model.predict"

    def deployments(self, model, x_calibration: np.ndarray) -> dict:
        """ONNX converted by tf2onnx from the model's serving ``tf.function`` (batch dimension None),
        served by onnxruntime; and int8 by the TFLite converter, full-integer quantisation (int8
        weights per channel, int8 activations calibrated on training rows; float32 in and out),
        served by the TFLite interpreter."""
        forward = getattr(model, "forward", None)
        if not isinstance(forward, tf.types.experimental.PolymorphicFunction):  # not a model of this backend
            return {}
        calibration = deploy.calibration_rows(x_calibration)

        def onnx() -> Served:
            import tf2onnx

            with contextlib.redirect_stdout(io.StringIO()):
                proto, _ = tf2onnx.convert.from_function(forward, input_signature=forward.input_signature)
            return deploy.onnx_served(
                proto.SerializeToString(),
                self.threads,
                f"tf2onnx {tf2onnx.__version__} from the model's tf.function (TF {tf.__version__})",
                self.n_params(model),
                self.macs_per_row(model),
            )

        def int8() -> Served:
            from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

            # Frozen first: the converter's calibration cannot read the variables of a captured Keras model.
            absl, absl_level = logging.getLogger("absl"), logging.getLogger("absl").level
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                absl.setLevel(logging.ERROR)  # the converter warns of its deprecated path for frozen functions
                try:
                    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
                    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
                    converter.optimizations = [tf.lite.Optimize.DEFAULT]
                    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                    converter.representative_dataset = lambda: (
                        [calibration[i : i + 32]] for i in range(0, len(calibration), 32)
                    )
                    flatbuffer = converter.convert()
                finally:
                    absl.setLevel(absl_level)
            return deploy.tflite_served(
                flatbuffer,
                self.threads,
                f"full-integer int8 by tf.lite.TFLiteConverter (int8 weights per channel, "
                f"activations calibrated on {len(calibration)} training rows, float32 in/out)",
                self.n_params(model),
                self.macs_per_row(model),
            )

        return {"onnx": onnx, "int8": int8}


class _TFTrainer(Trainer):
    """``run``: a whole list of batches in one call of one ``tf.function``: the arrays become tensors
    once per call and a ``tf.while_loop`` gathers each batch's rows and runs the step, so Python and
    the call overhead are paid once per epoch instead of once per batch. ``step``: the same step,
    one batch per call (bit for bit the weights of ``run``). XLA (``jit_compile``) was measured and is
    not used: the default teacher's step ran 5x slower under it, the student's 2.5x faster but only
    at a fixed batch shape and after a compile of ~3 s per model, more than it saves here."""

    path = (
        "tf.function: one call per epoch, a tf.while_loop over the batches (rows gathered from tensors "
        "made once per epoch), a GradientTape step of TextbookAdam per batch"
    )

    def __init__(self, model, optimizer, objective):
        self.optimizer = optimizer

        def step(x, y, t):
            with tf.GradientTape() as tape:
                value = objective(model(x, training=True), y, t)
            optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))

        @tf.function(reduce_retracing=True)
        def epoch(x, y, t, rows, starts, ends):
            for i in tf.range(tf.size(ends)):
                batch = rows[starts[i] : ends[i]]
                step(tf.gather(x, batch), tf.gather(y, batch), None if t is None else tf.gather(t, batch))

        self._step, self._epoch = tf.function(step, reduce_retracing=True), epoch

    def step(self, x, y, t) -> None:
        self._step(x, y, t)

    def run(self, x, y, t, batches) -> None:
        if batches:
            sizes = [len(rows) for rows in batches]
            ends = np.cumsum(sizes)
            self._epoch(x, y, t, np.concatenate(batches), ends - sizes, ends)

    def set_learning_rate(self, value: float) -> None:
        self.optimizer.learning_rate.assign(value)
