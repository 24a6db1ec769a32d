"""Noise only ('SimCLR dagger'): the stochastic encoder of LBE/MIB without any extra term."""

from __future__ import annotations

from typing import Literal

from mimcli.config import RegularizerSection
from mimcli.regularizers.base import Regularizer, register_regularizer


class NoiseSection(RegularizerSection):
    kind: Literal["noise"] = "noise"
    label = "noise"
    uses = ("sigma",)


class NoiseOnly(Regularizer):
    """'SimCLR dagger': Gaussian noise on h, no extra term."""

    Section = NoiseSection

    noisy_blocks = ("layer4",)


register_regularizer(NoiseOnly)
