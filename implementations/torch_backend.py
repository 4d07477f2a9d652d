"""The PyTorch side of the pipeline (see ``pipeline.Backend``)."""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import logging
import math
import os
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from distillbench.implementations import deploy
from distillbench.implementations.objectives import OBJECTIVES
from distillbench.implementations.pipeline import Backend, LossSpec, Served, Trainer
from distillbench.implementations.spec import MLPSpec, TrainingSpec, residual_skips

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": nn.Identity}


def _soft_targets(spec: LossSpec):
    def squared_error(out, t):
        return (out[:, 0] - t) ** 2

    def kl(out, t):  # xlogy: 0 log 0 = 0
        return torch.sum(torch.xlogy(t, t) - t * F.log_softmax(out / spec.temperature, dim=1), dim=1)

    return squared_error if spec.task == "regression" else kl


def _logit_matching(spec: LossSpec):
    def squared_error(out, t):
        return torch.mean((out - t) ** 2, dim=1)

    return squared_error


def _hard_labels(spec: LossSpec):
    def cross_entropy(out, t):
        return -torch.sum(t * F.log_softmax(out, dim=1), dim=1)

    return cross_entropy


# Per objective of objectives.OBJECTIVES, by name: the teacher term of each row (as in tf_backend).
TEACHER_TERMS = {"soft_targets": _soft_targets, "logit_matching": _logit_matching, "hard_labels": _hard_labels}


def loss_fn(spec: LossSpec):
    """The training objective as a function of (outputs, y, t); see ``LossSpec`` and ``objectives.py``."""
    teacher_term, scale = TEACHER_TERMS[spec.objective](spec), OBJECTIVES[spec.objective].scale(spec)

    def masked(out, y, t):  # rows without a label (y: -1 or NaN) get the teacher term alone
        if spec.task == "regression":
            labelled = torch.isfinite(y)
            label = (out[:, 0] - torch.where(labelled, y, torch.zeros_like(y))) ** 2  # no NaN reaches a gradient
        else:
            labelled = y >= 0
            label = F.cross_entropy(out, torch.where(labelled, y, torch.zeros_like(y)), reduction="none")
        w = spec.alpha * labelled.to(out.dtype)
        return torch.mean(w * label + (1.0 - w) * scale * teacher_term(out, t))

    def objective(out, y, t):
        if spec.masked:
            return masked(out, y, t)
        if spec.task == "regression":
            loss = spec.alpha * torch.mean((out[:, 0] - y) ** 2)
        else:
            loss = spec.alpha * F.cross_entropy(out, y)
        return loss if spec.alpha == 1.0 else loss + (1.0 - spec.alpha) * scale * torch.mean(teacher_term(out, t))

    return objective


class ResidualMLP(nn.Module):
    """An MLP whose hidden layer i computes ``h + dropout(act(h W + b))`` where ``skips[i]``, else
    ``dropout(act(h W + b))``; the output layer is linear."""

    def __init__(self, sizes: list[int], spec: MLPSpec, skips: list[bool]):
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.act = _ACTIVATIONS[spec.activation]()
        self.drop = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.skips = list(skips)

    def forward(self, x):
        for linear, skip in zip(self.linears[:-1], self.skips):
            h = self.drop(self.act(linear(x)))
            x = x + h if skip else h
        return self.linears[-1](x)


class Ensemble(nn.Module):
    """Trained members as one model: log of the mean of their softmax, or the mean of their outputs."""

    def __init__(self, members: list[nn.Module], task: str):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.classification = task == "classification"

    def forward(self, x):
        out = torch.stack([member(x) for member in self.members])
        if self.classification:
            return torch.logsumexp(F.log_softmax(out, dim=-1), dim=0) - math.log(len(self.members))
        return out.mean(dim=0)


class TorchBackend(Backend):
    name = "torch"
    version = torch.__version__
    suffix = ".pt"  # the state_dict: the architecture is the config's (build, then load_state_dict)
    device = torch.device("cpu")
    threads: int | None = None

    def configure(self, seed: int, threads: int | None = None, device: str = "cpu") -> None:
        self.determinism = "torch.manual_seed, torch.use_deterministic_algorithms(True)"
        if device == "gpu":
            if not torch.cuda.is_available():
                raise RuntimeError("--device gpu: torch sees no CUDA GPU (a CPU build of torch?)")
            # cuBLAS is deterministic only with this workspace setting, read when it first runs;
            # TF32 matmuls (Ampere and later) would round differently from the CPU and TensorFlow.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = False
            self.determinism += (
                f", CUBLAS_WORKSPACE_CONFIG={os.environ['CUBLAS_WORKSPACE_CONFIG']}, TF32 off "
                "(on GPU: torch's documented settings, not checked by this project's tests)"
            )
        self.device = torch.device("cuda" if device == "gpu" else "cpu")
        if threads:
            torch.set_num_threads(threads)
        self.threads = threads  # also the deployment runtimes' (onnxruntime)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def build(self, spec: MLPSpec, weights: list[np.ndarray]) -> nn.Module:
        skips = residual_skips(spec)
        if any(skips):
            model = ResidualMLP([weights[0].shape[0], *(b.shape[0] for b in weights[1::2])], spec, skips).to(
                self.device
            )
            self.set_weights(model, weights)
            return model
        layers: list[nn.Module] = []
        for i, kernel in enumerate(weights[0::2]):
            layers.append(nn.Linear(*kernel.shape))
            if i < len(spec.widths):
                layers.append(_ACTIVATIONS[spec.activation]())
                if spec.dropout:
                    layers.append(nn.Dropout(spec.dropout))
        model = nn.Sequential(*layers).to(self.device)
        self.set_weights(model, weights)
        return model

    def ensemble(self, members: list, task: str) -> nn.Module:
        return Ensemble(members, task).to(self.device)

    @staticmethod
    def _linears(model: nn.Module) -> list[nn.Linear]:
        return [m for m in model.modules() if isinstance(m, nn.Linear)]  # in registration order

    def get_weights(self, model) -> list[np.ndarray]:
        out = []
        for layer in self._linears(model):
            out += [layer.weight.detach().cpu().numpy().T.copy(), layer.bias.detach().cpu().numpy().copy()]
        return out

    def set_weights(self, model, weights: list[np.ndarray]) -> None:
        with torch.no_grad():
            for layer, kernel, bias in zip(self._linears(model), weights[0::2], weights[1::2]):
                layer.weight.copy_(self._tensor(np.ascontiguousarray(kernel.T)))
                layer.bias.copy_(self._tensor(bias))

    def _tensor(self, array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else torch.from_numpy(array).to(self.device)

    def trainer(self, model, loss: LossSpec, training: TrainingSpec):
        # fused: one kernel updates every parameter (torch's CPU and CUDA fused Adam); it differs
        # from the per-parameter update by float rounding only (3e-8 here) and is deterministic.
        optimizer = torch.optim.Adam(
            model.parameters(),
            lr=training.learning_rate,
            betas=(training.beta_1, training.beta_2),
            eps=training.epsilon,
            weight_decay=0.0,
            amsgrad=False,
            fused=True,
        )
        return _TorchTrainer(model, optimizer, loss_fn(loss), self._tensor)

    def loss(self, model, loss: LossSpec, x, y, t) -> float:
        model.eval()
        with torch.inference_mode():
            return float(loss_fn(loss)(model(self._tensor(x)), self._tensor(y), self._tensor(t)))

    def serving_fn(self, model):
        model.eval()

        def call(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(self._tensor(x)).cpu().numpy()

        return call, f"torch eager nn.Module call under torch.inference_mode() on {self.device.type}"

    def save(self, model, path) -> None:
        # Through a file object, the archive's inner folder is "archive" whatever the file's name,
        # so the file is exactly as large as the model_bytes measured.
        with open(path, "wb") as file:
            torch.save(model.state_dict(), file)

    def deployments(self, model, x_calibration: np.ndarray) -> dict:
        """ONNX exported by torch.onnx (the torch.export-based exporter) with a dynamic batch
        dimension, served by onnxruntime; and int8 by dynamic quantisation of every nn.Linear
        (int8 weights per tensor, activations quantised per call), served by torch on CPU."""
        if not isinstance(model, nn.Module):  # a model outside torch (e.g. a tree teacher)
            return {}
        example = torch.from_numpy(deploy.calibration_rows(x_calibration)[:2])

        def cpu_copy() -> nn.Module:
            return copy.deepcopy(model).cpu().eval()

        def onnx() -> Served:
            with warnings.catch_warnings(), _quiet_onnx_exporter():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    cpu_copy(),
                    (example,),
                    dynamo=True,
                    verbose=False,
                    input_names=["x"],
                    output_names=["y"],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                )
            return deploy.onnx_served(
                program.model_proto.SerializeToString(),
                self.threads,
                f"torch.onnx.export (dynamo) from torch {torch.__version__}",
                self.n_params(model),
                self.macs_per_row(model),
            )

        def int8() -> Served:
            with warnings.catch_warnings():  # torch.ao.quantization is deprecated for torchao, not yet gone
                warnings.simplefilter("ignore")
                quantized = torch.ao.quantization.quantize_dynamic(cpu_copy(), {nn.Linear}, dtype=torch.qint8)
            buffer = io.BytesIO()
            torch.save(quantized.state_dict(), buffer)

            def call(x: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    return quantized(torch.from_numpy(x)).numpy()

            return Served(
                call,
                f"torch {torch.__version__} dynamic int8 quantisation "
                f"(torch.ao.quantization.quantize_dynamic of nn.Linear: int8 weights per tensor, "
                f"activations quantised per call, {torch.backends.quantized.engine} engine) "
                f"on cpu under torch.inference_mode()",
                self.n_params(model),
                buffer.getbuffer().nbytes,
                self.macs_per_row(model),
                tolerance=None,
                file=buffer.getvalue(),
                suffix=".pt",
            )

        return {"onnx": onnx, "int8": int8}


@contextlib.contextmanager
def _quiet_onnx_exporter():
    """torch.onnx's exporter prints its progress and logs warnings about torchvision: hide them."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


class _TorchTrainer(Trainer):
    """``run`` makes the epoch's tensors once (``torch.from_numpy`` shares the arrays' memory on
    CPU) and takes each batch by indexing them: no numpy slicing or conversion per batch."""

    path = "torch eager: per batch, rows indexed from tensors made once per epoch, one step of fused torch.optim.Adam"

    def __init__(self, model, optimizer, objective, tensor):
        self.model, self.optimizer, self.objective, self.tensor = model, optimizer, objective, tensor

    def _step(self, x, y, t) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.objective(self.model(x), y, t).backward()
        self.optimizer.step()

    def step(self, x, y, t) -> None:
        self.model.train()
        self._step(self.tensor(x), self.tensor(y), self.tensor(t))

    def run(self, x, y, t, batches) -> None:
        self.model.train()
        if not batches:
            return
        x, y, t = self.tensor(x), self.tensor(y), self.tensor(t)
        for rows in self.tensor(np.concatenate(batches)).split([len(rows) for rows in batches]):
            self._step(x[rows], y[rows], None if t is None else t[rows])

    def set_learning_rate(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = value
