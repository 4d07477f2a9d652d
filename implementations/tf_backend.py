"""The TensorFlow/Keras side of the pipeline (see ``pipeline.Backend``).

Training runs a ``tf.function`` step with ``GradientTape`` and Keras's Adam; prediction calls the
model inside a ``tf.function`` (``Model.predict`` costs milliseconds per call).

Keras's Adam adds epsilon to sqrt(v) before the bias correction, torch's after it (Kingma & Ba's
Algorithm 1), so the same epsilon gives different steps wherever a gradient is near epsilon (dead
ReLU units, late training). ``TextbookAdam`` makes the Keras update the torch one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # hides the oneDNN notice; changes no result

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from distillbench.implementations.pipeline import Backend, LossSpec  # noqa: E402
from distillbench.implementations.spec import MLPSpec, TrainingSpec  # noqa: E402


def loss_fn(spec: LossSpec):
    """The training objective as a function of (outputs, y, t); see ``LossSpec``."""
    if spec.task == "regression":
        def regression(out, y, t):
            s = out[:, 0]
            loss = spec.alpha * tf.reduce_mean(tf.square(s - y))
            return loss if spec.alpha == 1.0 else loss + (1.0 - spec.alpha) * tf.reduce_mean(tf.square(s - t))
        return regression

    def classification(out, y, t):
        loss = spec.alpha * tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out))
        if spec.alpha == 1.0:
            return loss
        log_p = tf.nn.log_softmax(out / spec.temperature, axis=1)
        kl = tf.reduce_mean(tf.reduce_sum(tf.math.xlogy(t, t) - t * log_p, axis=1))  # xlogy: 0 log 0 = 0
        return loss + (1.0 - spec.alpha) * spec.kl_scale * kl
    return classification


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


class TensorFlowBackend(Backend):
    name = "tensorflow"
    version = tf.__version__

    def configure(self, seed: int, threads: int | None = None, device: str = "cpu") -> None:
        if device == "gpu" and not tf.config.list_physical_devices("GPU"):
            raise RuntimeError("--device gpu: TensorFlow sees no GPU (tensorflow-cpu is installed)")
        try:
            if device == "cpu":
                tf.config.set_visible_devices([], "GPU")
            if threads:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TF already ran an op in this process: the first job's settings stay
            pass
        keras.backend.clear_session()  # a worker runs several jobs: start each from a clean state
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()

    def build(self, spec: MLPSpec, weights: list[np.ndarray]) -> keras.Model:
        layers: list = [keras.Input(shape=(weights[0].shape[0],))]
        for width in spec.widths:
            layers.append(keras.layers.Dense(width, activation=spec.activation))
            if spec.dropout:
                layers.append(keras.layers.Dropout(spec.dropout))
        layers.append(keras.layers.Dense(weights[-1].shape[0]))
        model = keras.Sequential(layers)
        model.set_weights(weights)
        # One trace for every batch size: no retracing between single rows and large batches.
        model.forward = tf.function(lambda x: model(x, training=False),
                                    input_signature=[tf.TensorSpec([None, weights[0].shape[0]], tf.float32)])
        return model

    def serialized_size(self, model) -> int:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.keras"
            model.save(path)
            return path.stat().st_size

    def get_weights(self, model) -> list[np.ndarray]:
        return [w.copy() for w in model.get_weights()]

    def set_weights(self, model, weights: list[np.ndarray]) -> None:
        model.set_weights(weights)

    def trainer(self, model, loss: LossSpec, training: TrainingSpec):
        optimizer = TextbookAdam(
            learning_rate=training.learning_rate, beta_1=training.beta_1, beta_2=training.beta_2, epsilon=training.epsilon,
        )
        optimizer.build(model.trainable_variables)
        objective = loss_fn(loss)

        @tf.function(reduce_retracing=True)
        def step(x, y, t):
            with tf.GradientTape() as tape:
                value = objective(model(x, training=True), y, t)
            optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))
        return step

    def loss(self, model, loss: LossSpec, x, y, t) -> float:
        return float(loss_fn(loss)(model.forward(x), y, t))

    def serving_fn(self, model):
        return (lambda x: model.forward(x).numpy()), "tf.function(model(x, training=False)), not Model.predict"
