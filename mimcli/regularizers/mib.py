"""MIB baseline (analysis): noisy h to the head, plus MSE between the views' clean pooled features."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from mimcli.config import RegularizerSection
from mimcli.data.batch import Batch
from mimcli.objectives import information
from mimcli.regularizers.base import Features, Regularizer, register_regularizer


class MIBSection(RegularizerSection):
    kind: Literal["mib"] = "mib"
    label = "MIB"
    uses = ("lambda", "sigma")


class MIB(Regularizer):
    """MIB baseline: noisy h to the head, plus MSE between the views' clean pooled features."""

    Section = MIBSection
    min_views = 2
    noisy_blocks = ("layer4",)

    def loss(self, clean: Features, noisy: Features, batch: Batch) -> dict[str, Tensor]:
        return {"reg": information.mse_between_views(clean["layer4"], batch.n_views)}


register_regularizer(MIB)
