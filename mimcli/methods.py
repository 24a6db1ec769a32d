"""Methods: heads + a pure loss, registered by name. The training loop only calls the `Method` API.

A method receives the (possibly regulariser-perturbed) pooled features of all views, stacked view
by view ([v1; v2]), and returns its loss terms. Per-step side effects (BYOL's EMA target) live in
`on_step_end`, which every method has, so the loop needs no method-specific branch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mimcli.config import MethodSection
from mimcli.distributed import gather_with_grad
from mimcli.models.heads import mlp
from mimcli.models.resnet import PooledResNet
from mimcli.objectives import contrastive


@dataclass
class Batch:
    """One training step's input: augmented views stacked view-major, and labels of the images."""

    views: Tensor
    labels: Tensor
    n_views: int


class Method(nn.Module):
    n_views: int = 2
    needs_labels: bool = False
    # Under DDP, BatchNorm over the global batch (SyncBatchNorm) instead of each rank's share: the
    # self-supervised methods then train as one process with the global batch would (and SimCLR's
    # BN cannot leak which samples sit together on a device); supervised keeps per-rank statistics.
    sync_batchnorm: bool = True

    def loss(self, features: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """Return {"method": scalar loss, ...other terms to log}."""
        raise NotImplementedError

    def on_step_end(self, backbone: nn.Module, epoch: int, epochs: int) -> None:
        """Called after every optimiser step; most methods do nothing."""


class SimCLR(Method):
    def __init__(self, cfg: MethodSection, feature_dim: int) -> None:
        super().__init__()
        self.projector = mlp(feature_dim, cfg.hidden_dim, cfg.proj_dim or 128, batch_norm=False)
        self.temperature = cfg.temperature

    def loss(self, features: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        z1, z2 = self.projector(features["layer4"]).chunk(2)
        return {"method": contrastive.nt_xent(gather_with_grad(z1), gather_with_grad(z2), self.temperature)}


class BarlowTwins(Method):
    def __init__(self, cfg: MethodSection, feature_dim: int) -> None:
        super().__init__()
        self.projector = mlp(feature_dim, cfg.hidden_dim, cfg.proj_dim or 1024, batch_norm=True)
        self.offdiag_weight = cfg.offdiag_weight

    def loss(self, features: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        z1, z2 = self.projector(features["layer4"]).chunk(2)
        return {
            "method": contrastive.barlow_twins_loss(gather_with_grad(z1), gather_with_grad(z2), self.offdiag_weight)
        }


def byol_momentum(base: float, epoch: int, epochs: int) -> float:
    """m = 1 - (1 - base) * (cos(pi * epoch / epochs) + 1) / 2 (REFERENCE.md)."""
    return 1 - (1 - base) * (math.cos(math.pi * epoch / epochs) + 1) / 2


class BYOL(Method):
    """Online projector + predictor; the target (backbone + projector) is an EMA copy on clean features."""

    def __init__(self, cfg: MethodSection, feature_dim: int, backbone: PooledResNet) -> None:
        super().__init__()
        proj_dim = cfg.proj_dim or 128
        self.projector = mlp(feature_dim, cfg.hidden_dim, proj_dim, batch_norm=True)
        self.predictor = mlp(proj_dim, proj_dim, proj_dim, batch_norm=True)
        self.target_backbone = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for parameter in [*self.target_backbone.parameters(), *self.target_projector.parameters()]:
            parameter.requires_grad_(False)
        self.base_momentum = cfg.base_momentum

    def loss(self, features: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        p1, p2 = self.predictor(self.projector(features["layer4"])).chunk(2)
        with torch.no_grad():
            t1, t2 = self.target_projector(self.target_backbone(batch.views)["layer4"]).chunk(2)
        return {"method": contrastive.byol_symmetric_loss(p1, p2, t1, t2)}

    @torch.no_grad()
    def on_step_end(self, backbone: nn.Module, epoch: int, epochs: int) -> None:
        m = byol_momentum(self.base_momentum, epoch, epochs)
        for online, target in ((backbone, self.target_backbone), (self.projector, self.target_projector)):
            online_params = [p.detach() for p in online.parameters()]
            torch._foreach_lerp_(list(target.parameters()), online_params, 1 - m)
            for b_online, b_target in zip(online.buffers(), target.buffers()):
                b_target.copy_(b_online)


class Supervised(Method):
    """Cross-entropy on one view with a linear classifier; logs training accuracy."""

    n_views = 1
    needs_labels = True
    sync_batchnorm = False

    def __init__(self, cfg: MethodSection, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(feature_dim, num_classes)

    def loss(self, features: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        logits = self.classifier(features["layer4"])
        accuracy = (logits.argmax(1) == batch.labels).float().mean() * 100
        return {"method": contrastive.cross_entropy(logits, batch.labels), "train_acc": accuracy.detach()}


MethodFactory = Callable[[MethodSection, PooledResNet, int], Method]

METHODS: dict[str, MethodFactory] = {
    "simclr": lambda cfg, backbone, classes: SimCLR(cfg, backbone.out_dim),
    "byol": lambda cfg, backbone, classes: BYOL(cfg, backbone.out_dim, backbone),
    "barlow": lambda cfg, backbone, classes: BarlowTwins(cfg, backbone.out_dim),
    "supervised": lambda cfg, backbone, classes: Supervised(cfg, backbone.out_dim, classes),
}


def build_method(cfg: MethodSection, backbone: PooledResNet, num_classes: int) -> Method:
    return METHODS[cfg.name](cfg, backbone, num_classes)
