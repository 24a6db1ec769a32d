"""Barlow Twins: the cross-correlation of two views' projections pushed to the identity (Zbontar et al. 2021)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from mimcli.data.batch import Batch
from mimcli.distributed import gather_with_grad
from mimcli.methods.base import Method, ProjectorSection, register_method
from mimcli.models.heads import mlp
from mimcli.models.resnet import PooledResNet
from mimcli.objectives import contrastive


class BarlowSection(ProjectorSection):
    name: Literal["barlow"] = "barlow"
    offdiag_weight: float = Field(0.01, ge=0, description="Barlow Twins off-diagonal weight.")
    label = "Barlow Twins"
    uses = ("offdiag_weight", "hidden_dim", "proj_dim")


class BarlowTwins(Method):
    Section = BarlowSection

    def __init__(self, cfg: BarlowSection, backbone: PooledResNet, num_classes: int) -> None:
        super().__init__(cfg, backbone, num_classes)
        self.projector = mlp(backbone.out_dim, cfg.hidden_dim, cfg.proj_dim or 1024, batch_norm=True)
        self.offdiag_weight = cfg.offdiag_weight

    def loss(self, features: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        z1, z2 = self.projector(features["layer4"]).chunk(2)
        return {
            "method": contrastive.barlow_twins_loss(gather_with_grad(z1), gather_with_grad(z2), self.offdiag_weight)
        }


register_method(BarlowTwins)
