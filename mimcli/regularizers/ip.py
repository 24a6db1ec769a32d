"""IP baseline (analysis): deterministic h, plus MSE between the views' h."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from mimcli.config import RegularizerSection
from mimcli.data.batch import Batch
from mimcli.objectives import information
from mimcli.regularizers.base import Features, Regularizer, register_regularizer


class IPSection(RegularizerSection):
    kind: Literal["ip"] = "ip"
    label = "IP"
    uses = ("lambda",)


class InversePredictive(Regularizer):
    """IP baseline: deterministic h, plus MSE between the views' h."""

    Section = IPSection
    min_views = 2

    def loss(self, clean: Features, noisy: Features, batch: Batch) -> dict[str, Tensor]:
        return {"reg": information.mse_between_views(clean["layer4"], batch.n_views)}


register_regularizer(InversePredictive)
