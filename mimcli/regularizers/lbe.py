"""LBE: raise I(z, v) through a lower-bound estimate on stochastic pooled blocks (Wang et al. 2022)."""

from __future__ import annotations

from typing import Literal, cast

from pydantic import Field
from torch import Tensor

from mimcli.config import IMAGENET_SIZE, RegularizerSection
from mimcli.data.batch import Batch
from mimcli.distributed import gather_with_grad
from mimcli.errors import UsageError
from mimcli.models.resnet import PooledResNet
from mimcli.objectives import information
from mimcli.regularizers.base import Features, Regularizer, register_regularizer

LBE_RHO = 1 / 20  # official InfoNCE: score = -||z - mu||^2 / 20. (SimCLR/modules/mi_estimators.py L8)


class LBESection(RegularizerSection):
    kind: Literal["lbe"] = "lbe"
    rho: float | None = Field(
        None,
        gt=0,
        description="LBE distance scale exp(-rho * ||z_k - f(v_l)||^2); default 1/20 (0.05) at every "
        "resolution, as every folder of the official code executes (its '80 for ImageNet' is a comment).",
    )
    block_weights: dict[str, float] | None = Field(
        None,
        description="LBE weight per pooled block; default as the official code: layer2 0.25, layer3 0.5, "
        "layer4 1 (224 px / ImageNet: layer4 only).",
    )
    label = "LBE"
    uses = ("lambda", "sigma", "rho", "block_weights")

    def lbe_rho(self, image_size: int) -> float:
        """rho, or the official 1/20: mi_estimators.py divides by 20. in every folder; its comment
        "# 80 for ImageNet" was never executed, so the ImageNet runs divided by 20 too."""
        return LBE_RHO if self.rho is None else self.rho

    def lbe_block_weights(self, image_size: int) -> dict[str, float]:
        """block_weights, or the official default for the resolution."""
        if self.block_weights is not None:
            return self.block_weights
        if image_size >= IMAGENET_SIZE:
            return {"layer4": 1.0}
        return {"layer2": 0.25, "layer3": 0.5, "layer4": 1.0}


class LowerBound(Regularizer):
    """LBE: stochastic pooled blocks; maximise the weighted uniformity bound over all views together."""

    Section = LBESection

    def __init__(self, cfg: LBESection, backbone: PooledResNet, image_size: int) -> None:
        super().__init__(cfg, backbone, image_size)
        block_weights = cfg.lbe_block_weights(image_size)
        missing = sorted(set(block_weights) - set(backbone.feature_dims))
        if missing:
            raise UsageError(
                f"regularizer.block_weights names {missing}, which the backbone does not expose "
                f"(it has {sorted(backbone.feature_dims)})"
            )
        self.block_weights = {name: w for name, w in block_weights.items() if w != 0}
        self.noisy_blocks = tuple(self.block_weights)
        self.rho = cfg.lbe_rho(image_size)

    def loss(self, clean: Features, noisy: Features, batch: Batch) -> dict[str, Tensor]:
        bound = cast(
            Tensor,
            sum(  # a Tensor unless every block weight is 0 (then int 0, which fails below)
                weight * information.lbe_bound(gather_with_grad(noisy[name]), gather_with_grad(clean[name]), self.rho)
                for name, weight in self.block_weights.items()
            ),
        )
        return {"reg": -bound, "mi_lbe": bound.detach()}


register_regularizer(LowerBound)
