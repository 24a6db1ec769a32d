"""SimCLR: NT-Xent between the projections of two views (Chen et al. 2020)."""

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


class SimCLRSection(ProjectorSection):
    name: Literal["simclr"] = "simclr"
    temperature: float = Field(0.5, gt=0, description="SimCLR NT-Xent temperature.")
    label = "SimCLR"
    uses = ("temperature", "hidden_dim", "proj_dim")


class SimCLR(Method):
    Section = SimCLRSection

    def __init__(self, cfg: SimCLRSection, backbone: PooledResNet, num_classes: int) -> None:
        super().__init__(cfg, backbone, num_classes)
        self.projector = mlp(backbone.out_dim, cfg.hidden_dim, cfg.proj_dim or 128, batch_norm=False)
        self.temperature = cfg.temperature

    def loss(self, features: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        z1, z2 = self.projector(features["layer4"]).chunk(2)
        return {"method": contrastive.nt_xent(gather_with_grad(z1), gather_with_grad(z2), self.temperature)}


register_method(SimCLR)
