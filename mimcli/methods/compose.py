"""The trainable whole: backbone + method heads + regulariser, composed the same way for every method."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from mimcli.config import RunConfig
from mimcli.data.batch import Batch
from mimcli.methods import Method, build_method
from mimcli.models.resnet import PooledResNet, build_backbone
from mimcli.models.viewnorm import group_batchnorm, per_view_batchnorm, view_groups
from mimcli.objectives.precision import LossPrecision, loss_precision
from mimcli.regularizers import Regularizer, build_regularizer


class PretrainModel(nn.Module):
    """forward(batch) -> every loss term; `loss` = method + lambda * regulariser (`weights`)."""

    def __init__(
        self,
        backbone: PooledResNet,
        method: Method,
        regularizer: Regularizer,
        lam: float,
        precision: LossPrecision = "fp32",
    ) -> None:
        super().__init__()
        self.backbone, self.method, self.regularizer, self.lam = backbone, method, regularizer, lam
        self.loss_precision = precision

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        with view_groups(batch.n_views), loss_precision(self.loss_precision):
            return self._terms(batch)

    def _terms(self, batch: Batch) -> dict[str, Tensor]:
        with record_function("mim.backbone"):  # named for the profiler (benchmarks/gpu_profile.py)
            clean = self.backbone(batch.views)
        with record_function("mim.method"):
            noisy = self.regularizer.perturb(clean)
            method_terms = self.method.loss(noisy, batch)
        with record_function("mim.regularizer"):
            reg_terms = self.regularizer.loss(clean, noisy, batch)
        parts = {"loss_method": method_terms.pop("method"), "loss_reg": reg_terms.pop("reg")}
        loss = cast(Tensor, sum(weight * parts[name] for name, weight in self.weights().items()))
        # the parts keep their graph (the loop detaches what it logs) so that each one's gradient can be
        # measured on its own (`gradient_norms`) without a second forward pass
        return {"loss": loss, **parts, **method_terms, **reg_terms}

    def weights(self) -> dict[str, float]:
        """The objective: `loss` = sum of weight * term over these terms of forward's output."""
        return {"loss_method": 1.0, "loss_reg": self.lam}

    def gradient_norms(self, terms: dict[str, Tensor]) -> dict[str, float]:
        """L2 norm of the gradient each weighted term of the objective (and their sum) sends into the
        backbone's parameters, and the cosine between each pair of terms' gradients, for one step's
        `terms` (forward's output, before backward: the graph is kept for the step's own backward).

        Which term drives the backbone is a question of gradients, not of loss values: a term can be
        small and still steer (or large and flat)."""
        params = [p for p in self.backbone.parameters() if p.requires_grad]
        flat = {name: self._flat_gradient(weight * terms[name], params) for name, weight in self.weights().items()}
        flat["loss"] = cast(Tensor, sum(flat.values()))
        out = {f"grad_norm_{name}": float(g.norm()) for name, g in flat.items()}
        names = list(self.weights())
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                a, b = flat[first], flat[second]
                denominator = float(a.norm() * b.norm())
                out[f"grad_cos_{first}_{second}"] = float(a @ b) / denominator if denominator else 0.0
        return out

    @staticmethod
    def _flat_gradient(term: Tensor, params: list[nn.Parameter]) -> Tensor:
        """d term / d params as one vector (zeros where the term does not reach a parameter)."""
        if not term.requires_grad:  # no regulariser, or lambda 0 on a constant term
            return torch.zeros(sum(p.numel() for p in params), device=term.device)
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        return torch.cat(
            [(g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, params)]
        )


def build_model(config: RunConfig, num_classes: int) -> PretrainModel:
    backbone = build_backbone(config.model.backbone, config.model.width, config.data.image_size, config.model.stem)
    method = build_method(config.method, backbone, num_classes)
    regularizer = build_regularizer(config.regularizer, backbone, config.data.image_size, method.n_views)
    model = PretrainModel(backbone, method, regularizer, config.regularizer.lam, config.train.loss_precision)
    if config.train.bn_stats == "per_view" and method.n_views > 1:
        per_view_batchnorm(model)  # the official statistics: each view normalised on its own
        # DataParallel's per-GPU statistics (official ImageNet run), on the backbone as there: the official RC
        # decoder sits outside DataParallel and SimCLR's projector has no BatchNorm
        group_batchnorm(model.backbone, config.train.bn_group_size)
    return model
