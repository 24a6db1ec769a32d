"""RC: raise I(z, v) through a reconstruction bound, decoding the augmented view from z (Wang et al. 2022)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from torch import Tensor

from mimcli.config import RegularizerSection
from mimcli.data.batch import Batch
from mimcli.errors import UsageError
from mimcli.models.decoders import SUPPORTED_SIZES, build_decoder
from mimcli.models.resnet import PooledResNet
from mimcli.objectives import information
from mimcli.regularizers.base import Features, Regularizer, register_regularizer

if TYPE_CHECKING:
    from mimcli.config import RunConfig


class RCSection(RegularizerSection):
    kind: Literal["rc"] = "rc"
    label = "RC"
    uses = ("lambda",)

    def check_run(self, config: RunConfig) -> None:
        if config.data.image_size not in SUPPORTED_SIZES:
            raise ValueError(
                f"data.image_size={config.data.image_size}: the RC decoder serves only {sorted(SUPPORTED_SIZES)} px"
            )


class Reconstruction(Regularizer):
    """RC: decode the normalised augmented view from clean pooled layer4, Gaussian q(v|z) -> MSE."""

    Section = RCSection

    def __init__(self, cfg: RCSection, backbone: PooledResNet, image_size: int) -> None:
        super().__init__(cfg, backbone, image_size)
        try:
            self.decoder = build_decoder(backbone.out_dim, image_size, backbone.width / 64)
        except ValueError as error:
            raise UsageError(f"regularizer.kind='rc': {error}") from None

    def loss(self, clean: Features, noisy: Features, batch: Batch) -> dict[str, Tensor]:
        reconstruction = self.decoder(clean["layer4"])
        return {"reg": information.reconstruction_loss(reconstruction, batch.views, batch.n_views)}


register_regularizer(Reconstruction)
