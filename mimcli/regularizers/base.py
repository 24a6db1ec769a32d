"""The regulariser API: perturb the pooled features, then return one signed term `reg`.

Each regulariser may perturb the pooled features before the method head sees them (stochastic encoder,
training mode only) and returns one term `reg`, already signed so that the total loss is
`method + lambda * reg`. The composition is the same for every method, so the loop never branches.
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from mimcli.config import (
    REGULARIZER_SECTIONS,
    RegularizerSection,
    register_section,
    regularizer_sections,
)
from mimcli.data.batch import Batch
from mimcli.errors import UsageError
from mimcli.models.resnet import PooledResNet

Features = dict[str, Tensor]


class Regularizer(nn.Module):
    """Perturbation + term. Subclasses set `Section` and take (section, backbone, image size)."""

    Section: ClassVar[type[RegularizerSection]]
    noisy_blocks: tuple[str, ...] = ()
    min_views: ClassVar[int] = 1  # MIB and IP compare two views

    def __init__(self, cfg: RegularizerSection, backbone: PooledResNet, image_size: int) -> None:
        super().__init__()
        self.sigma = cfg.sigma

    def perturb(self, features: Features) -> Features:
        """z = f(v) + sigma * eps on the pooled blocks this regulariser makes stochastic (training only).

        The noise is drawn and added in at least fp32 even when the backbone ran under bf16 autocast, as
        the official code (fp32 throughout): in bf16, f(v) + 0.01 * eps rounds about a fifth of the noise
        entries away (docs/fidelity.md). fp32 and float64 features draw exactly what they drew before."""
        if not self.training or not self.noisy_blocks or self.sigma == 0:
            return features
        noisy = dict(features)
        for name in self.noisy_blocks:
            clean = features[name]
            dtype = torch.promote_types(clean.dtype, torch.float32)
            noise = torch.randn(clean.shape, dtype=dtype, device=clean.device)
            noisy[name] = clean.to(dtype) + self.sigma * noise
        return noisy

    def loss(self, clean: Features, noisy: Features, batch: Batch) -> dict[str, Tensor]:
        return {"reg": clean["layer4"].new_zeros(())}


REGULARIZERS: dict[str, type[Regularizer]] = {}
R = TypeVar("R", bound=type[Regularizer])


def register_regularizer(regularizer: R) -> R:
    """The one line a regulariser module ends with: its section becomes selectable as regularizer.kind."""
    name = register_section(REGULARIZER_SECTIONS, "kind", regularizer.Section, "regularizer")
    REGULARIZERS[name] = regularizer
    return regularizer


def build_regularizer(cfg: RegularizerSection, backbone: PooledResNet, image_size: int, n_views: int) -> Regularizer:
    regularizer_sections()  # the built-ins are registered
    regularizer = REGULARIZERS[cfg.kind]
    if n_views < regularizer.min_views:
        raise UsageError(f"regularizer.kind={cfg.kind!r} compares two views; the method trains on one")
    return regularizer(cfg, backbone, image_size)
