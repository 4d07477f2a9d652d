"""The PyTorch side of the pipeline (see ``pipeline.Backend``)."""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from distillbench.implementations.pipeline import Backend, LossSpec
from distillbench.implementations.spec import MLPSpec, TrainingSpec

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": nn.Identity}


def loss_fn(spec: LossSpec):
    """The training objective as a function of (outputs, y, t); see ``LossSpec``."""
    if spec.task == "regression":
        def regression(out, y, t):
            s = out[:, 0]
            loss = spec.alpha * torch.mean((s - y) ** 2)
            return loss if spec.alpha == 1.0 else loss + (1.0 - spec.alpha) * torch.mean((s - t) ** 2)
        return regression

    def classification(out, y, t):
        loss = spec.alpha * F.cross_entropy(out, y)
        if spec.alpha == 1.0:
            return loss
        log_p = F.log_softmax(out / spec.temperature, dim=1)
        kl = torch.sum(torch.xlogy(t, t) - t * log_p, dim=1).mean()  # xlogy: 0 log 0 = 0
        return loss + (1.0 - spec.alpha) * spec.kl_scale * kl
    return classification


class TorchBackend(Backend):
    name = "torch"
    version = torch.__version__
    device = torch.device("cpu")

    def configure(self, seed: int, threads: int | None = None, device: str = "cpu") -> None:
        if device == "gpu":
            if not torch.cuda.is_available():
                raise RuntimeError("--device gpu: torch sees no CUDA GPU")
            self.device = torch.device("cuda")
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)

    def build(self, spec: MLPSpec, weights: list[np.ndarray]) -> nn.Sequential:
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

    @staticmethod
    def _linears(model: nn.Sequential) -> list[nn.Linear]:
        return [m for m in model if isinstance(m, nn.Linear)]

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
        optimizer = torch.optim.Adam(
            model.parameters(), lr=training.learning_rate, betas=(training.beta_1, training.beta_2),
            eps=training.epsilon, weight_decay=0.0, amsgrad=False,
        )
        objective = loss_fn(loss)

        def step(x, y, t):
            model.train()
            optimizer.zero_grad(set_to_none=True)
            objective(model(self._tensor(x)), self._tensor(y), self._tensor(t)).backward()
            optimizer.step()
        return step

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

    def serialized_size(self, model) -> int:
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        return buffer.getbuffer().nbytes
