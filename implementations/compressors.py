"""Stage 2, defined once for both frameworks: turn the teacher's outputs into the student's targets.

The teacher's outputs leave the framework as numpy arrays (logits for classification, standardised
values for regression), so every compressor is plain numpy and both implementations train their
students on exactly the same targets.

Classification (input: logits of shape (n, C); output: probabilities of shape (n, C) summing to 1):
- ``temperature``: softmax(z / T) (Hinton et al. 2015);
- ``topk``: softmax(z / T), all but the k largest set to 0, renormalised;
- ``quantize``: softmax(z / T) on a grid of 2^b levels {0, 1/L, ..., 1} with L = 2^b - 1, rounded by
  largest remainder so that each row still sums to exactly 1.

Two classification objectives (``distill.objective``) replace the compressor: ``logit_matching``
passes the logits through unchanged (``logits``), ``hard_labels`` keeps only the teacher's most
likely class, as a one-hot row (``argmax``; ties to the first class).

Regression (input: shape (n,); output: shape (n,)):
- ``identity``: the teacher's outputs as they are;
- ``affine``: ``a * t + b``, a one-in/one-out linear layer fitted to map the teacher's outputs onto
  the training labels, as in the source design. It is fitted by ordinary least squares, the exact
  minimiser of the MSE that the source trains its Dense(1) with, so both frameworks get the same map;
- ``quantize``: the outputs snapped to 2^b evenly spaced levels between the smallest and largest
  teacher output on the training split (values outside are clipped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distillbench.implementations.spec import DistillSpec


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    k = min(k, probs.shape[1])
    drop = np.argsort(-probs, axis=1, kind="stable")[:, k:]
    kept = probs.copy()
    np.put_along_axis(kept, drop, 0.0, axis=1)
    return kept / kept.sum(axis=1, keepdims=True)


def quantize_probs(probs: np.ndarray, bits: int) -> np.ndarray:
    levels = 2**bits - 1
    scaled = probs * levels
    counts = np.floor(scaled).astype(np.int64)
    short = levels - counts.sum(axis=1)  # units still to hand out in each row
    order = np.argsort(-(scaled - counts), axis=1, kind="stable")
    bump = np.arange(probs.shape[1])[None, :] < short[:, None]
    np.put_along_axis(counts, order, np.take_along_axis(counts, order, axis=1) + bump, axis=1)
    return counts / levels


@dataclass(frozen=True)
class Compressor:
    """A fitted compressor: ``apply`` maps teacher outputs to student targets (float32)."""

    task: str
    kind: str
    temperature: float = 1.0
    k: int = 0
    bits: int = 0
    scale: float = 1.0  # affine: a
    offset: float = 0.0  # affine: b
    low: float = 0.0  # regression quantize: the grid
    high: float = 0.0

    def apply(self, teacher_outputs: np.ndarray) -> np.ndarray:
        t = np.asarray(teacher_outputs, dtype=np.float64)
        if self.task == "classification" and self.kind == "logits":
            out = t
        elif self.task == "classification" and self.kind == "argmax":
            out = np.arange(t.shape[1]) == t.argmax(axis=1)[:, None]
        elif self.task == "classification":
            out = softmax(t, self.temperature)
            if self.kind == "topk":
                out = top_k(out, self.k)
            elif self.kind == "quantize":
                out = quantize_probs(out, self.bits)
        elif self.kind == "identity":
            out = t
        elif self.kind == "affine":
            out = self.scale * t + self.offset
        else:  # regression quantize
            steps = 2**self.bits - 1
            width = (self.high - self.low) or 1.0
            out = self.low + np.round((np.clip(t, self.low, self.high) - self.low) / width * steps) / steps * width
        return out.astype(np.float32)


def fit_compressor(task: str, spec: DistillSpec, teacher_train_outputs: np.ndarray, y_train: np.ndarray) -> Compressor:
    """Fit stage 2 on the training split's teacher outputs (and labels, for ``affine``)."""
    if task == "classification" and spec.objective != "soft_targets":
        return Compressor(task, "logits" if spec.objective == "logit_matching" else "argmax")
    if task == "classification":
        return Compressor(task, spec.classification_compressor, temperature=spec.temperature, k=spec.topk, bits=spec.bits)
    kind = spec.regression_compressor
    t = np.asarray(teacher_train_outputs, dtype=np.float64)
    if kind == "affine":
        design = np.column_stack([t, np.ones_like(t)])
        (scale, offset), *_ = np.linalg.lstsq(design, np.asarray(y_train, dtype=np.float64), rcond=None)
        return Compressor(task, kind, scale=float(scale), offset=float(offset))
    if kind == "quantize":
        return Compressor(task, kind, bits=spec.bits, low=float(t.min()), high=float(t.max()))
    return Compressor(task, kind)
