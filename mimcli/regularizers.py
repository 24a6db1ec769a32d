"""Regularisers that raise I(z, v) (RC, LBE) and the analysis baselines (MIB, IP, noise).

Each one may perturb the pooled features before the method head sees them (stochastic encoder,
training mode only) and returns one term `reg`, already signed so that the total loss is
`method + lambda * reg`. The composition is the same for every method, so the loop never branches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mimcli.config import RegularizerSection
from mimcli.errors import UsageError
from mimcli.methods import Batch
from mimcli.models.decoders import build_decoder
from mimcli.models.resnet import PooledResNet
from mimcli.objectives import information

Features = dict[str, Tensor]


class Regularizer(nn.Module):
    noisy_blocks: tuple[str, ...] = ()

    def __init__(self, cfg: RegularizerSection) -> None:
        super().__init__()
        self.sigma = cfg.sigma

    def perturb(self, features: Features) -> Features:
        """z = f(v) + sigma * eps on the pooled blocks this regulariser makes stochastic (training only)."""
        if not self.training or not self.noisy_blocks or self.sigma == 0:
            return features
        noisy = dict(features)
        for name in self.noisy_blocks:
            noisy[name] = features[name] + self.sigma * torch.randn_like(features[name])
        return noisy

    def loss(self, clean: Features, noisy: Features, batch: Batch) -> dict[str, Tensor]:
        return {"reg": clean["layer4"].new_zeros(())}


class NoRegularizer(Regularizer):
    pass


class NoiseOnly(Regularizer):
    """'SimCLR dagger': Gaussian noise on h, no extra term."""

    noisy_blocks = ("layer4",)


class Reconstruction(Regularizer):
    """RC: decode the normalised augmented view from clean pooled layer4, Gaussian q(v|z) -> MSE."""

    def __init__(self, cfg: RegularizerSection, backbone: PooledResNet, image_size: int) -> None:
        super().__init__(cfg)
        try:
            self.decoder = build_decoder(backbone.out_dim, image_size, backbone.width / 64)
        except ValueError as error:
            raise UsageError(f"regularizer.kind='rc': {error}") from None

    def loss(self, clean: Features, noisy: Features, batch: Batch) -> dict[str, Tensor]:
        reconstruction = self.decoder(clean["layer4"])
        return {"reg": information.reconstruction_loss(reconstruction, batch.views, batch.n_views)}


class LowerBound(Regularizer):
    """LBE: stochastic pooled blocks; maximise the weighted uniformity bound over all views together."""

    def __init__(self, cfg: RegularizerSection, backbone: PooledResNet, image_size: int) -> None:
        super().__init__(cfg)
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
        from mimcli.distributed import gather_with_grad

        bound: Tensor = sum(  # type: ignore[assignment]  # a sum of Tensors (block_weights is never empty)
            weight * information.lbe_bound(gather_with_grad(noisy[name]), gather_with_grad(clean[name]), self.rho)
            for name, weight in self.block_weights.items()
        )
        return {"reg": -bound, "mi_lbe": bound.detach()}


class MIB(Regularizer):
    """MIB baseline: noisy h to the head, plus MSE between the views' clean pooled features."""

    noisy_blocks = ("layer4",)

    def loss(self, clean: Features, noisy: Features, batch: Batch) -> dict[str, Tensor]:
        return {"reg": information.mse_between_views(clean["layer4"], batch.n_views)}


class InversePredictive(Regularizer):
    """IP baseline: deterministic h, plus MSE between the views' h."""

    def loss(self, clean: Features, noisy: Features, batch: Batch) -> dict[str, Tensor]:
        return {"reg": information.mse_between_views(clean["layer4"], batch.n_views)}


RegularizerFactory = Callable[[RegularizerSection, PooledResNet, int], Regularizer]

REGULARIZERS: dict[str, RegularizerFactory] = {
    "none": lambda cfg, backbone, size: NoRegularizer(cfg),
    "noise": lambda cfg, backbone, size: NoiseOnly(cfg),
    "rc": lambda cfg, backbone, size: Reconstruction(cfg, backbone, size),
    "lbe": lambda cfg, backbone, size: LowerBound(cfg, backbone, size),
    "mib": lambda cfg, backbone, size: MIB(cfg),
    "ip": lambda cfg, backbone, size: InversePredictive(cfg),
}


def build_regularizer(cfg: RegularizerSection, backbone: PooledResNet, image_size: int, n_views: int) -> Regularizer:
    if cfg.kind in ("mib", "ip") and n_views < 2:
        raise UsageError(f"regularizer.kind={cfg.kind!r} compares two views; the method trains on one")
    return REGULARIZERS[cfg.kind](cfg, backbone, image_size)
