"""Supervised baseline: cross-entropy on one view with a linear classifier."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from mimcli.config import MethodSection
from mimcli.data.batch import Batch
from mimcli.methods.base import Method, register_method
from mimcli.models.resnet import PooledResNet
from mimcli.objectives import contrastive


class SupervisedSection(MethodSection):
    name: Literal["supervised"] = "supervised"
    label = "Supervised"
    min_batch = 1  # cross-entropy is per image


class Supervised(Method):
    """Cross-entropy on one view with a linear classifier; logs training accuracy."""

    n_views = 1
    needs_labels = True
    sync_batchnorm = False
    Section = SupervisedSection

    def __init__(self, cfg: SupervisedSection, backbone: PooledResNet, num_classes: int) -> None:
        super().__init__(cfg, backbone, num_classes)
        self.classifier = nn.Linear(backbone.out_dim, num_classes)

    def loss(self, features: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        logits = self.classifier(features["layer4"])
        accuracy = (logits.argmax(1) == batch.labels).float().mean() * 100
        return {"method": contrastive.cross_entropy(logits, batch.labels), "train_acc": accuracy.detach()}


register_method(Supervised)
