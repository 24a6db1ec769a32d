"""BYOL: an online predictor regresses an EMA target's projection (Grill et al. 2020); the EMA runs in on_step_end."""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from mimcli.data.batch import Batch
from mimcli.methods.base import Method, ProjectorSection, register_method
from mimcli.models.heads import mlp
from mimcli.models.resnet import PooledResNet
from mimcli.objectives import contrastive


def byol_momentum(base: float, epoch: int, epochs: int) -> float:
    """m = 1 - (1 - base) * (cos(pi * epoch / epochs) + 1) / 2 (docs/reference.md#byol-momentum)."""
    return 1 - (1 - base) * (math.cos(math.pi * epoch / epochs) + 1) / 2


class BYOLSection(ProjectorSection):
    name: Literal["byol"] = "byol"
    base_momentum: float = Field(0.996, ge=0, le=1, description="BYOL EMA base momentum.")
    label = "BYOL"
    uses = ("base_momentum", "hidden_dim", "proj_dim")


class BYOL(Method):
    """Online projector + predictor; the target (backbone + projector) is an EMA copy on clean features."""

    Section = BYOLSection

    def __init__(self, cfg: BYOLSection, backbone: PooledResNet, num_classes: int) -> None:
        super().__init__(cfg, backbone, num_classes)
        proj_dim = cfg.proj_dim or 128
        self.projector = mlp(backbone.out_dim, cfg.hidden_dim, proj_dim, batch_norm=True)
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


register_method(BYOL)
