"""The PyTorch side of the pipeline (see ``pipeline.Backend``)."""

from __future__ import annotations

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

    def configure(self, seed: int, threads: int | None = None) -> None:
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
        model = nn.Sequential(*layers)
        self.set_weights(model, weights)
        return model

    @staticmethod
    def _linears(model: nn.Sequential) -> list[nn.Linear]:
        return [m for m in model if isinstance(m, nn.Linear)]

    def get_weights(self, model) -> list[np.ndarray]:
        out = []
        for layer in self._linears(model):
            out += [layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()]
        return out

    def set_weights(self, model, weights: list[np.ndarray]) -> None:
        with torch.no_grad():
            for layer, kernel, bias in zip(self._linears(model), weights[0::2], weights[1::2]):
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
                layer.bias.copy_(torch.from_numpy(bias))

    def trainer(self, model, loss: LossSpec, training: TrainingSpec):
        optimizer = torch.optim.Adam(
            model.parameters(), lr=training.learning_rate, betas=(training.beta_1, training.beta_2),
            eps=training.epsilon, weight_decay=0.0, amsgrad=False,
        )
        objective = loss_fn(loss)

        def step(x, y, t):
            model.train()
            optimizer.zero_grad(set_to_none=True)
            objective(model(torch.from_numpy(x)), torch.from_numpy(y), None if t is None else torch.from_numpy(t)).backward()
            optimizer.step()
        return step

    def loss(self, model, loss: LossSpec, x, y, t) -> float:
        model.eval()
        with torch.inference_mode():
            return float(loss_fn(loss)(model(torch.from_numpy(x)), torch.from_numpy(y), None if t is None else torch.from_numpy(t)))

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
