"""The trainable whole: backbone + method heads + regulariser, composed the same way for every method."""

from __future__ import annotations

from torch import Tensor, nn
from torch.profiler import record_function

from mimcli.config import RunConfig
from mimcli.data.batch import Batch
from mimcli.methods import Method, build_method
from mimcli.models.resnet import PooledResNet, build_backbone
from mimcli.models.viewnorm import group_batchnorm, per_view_batchnorm, view_groups
from mimcli.objectives.precision import LossPrecision, loss_precision
from mimcli.regularizers import Regularizer, build_regularizer


class PretrainModel(nn.Module):
    """forward(batch) -> every loss term; `loss` = method + lambda * regulariser."""

    def __init__(
        self,
        backbone: PooledResNet,
        method: Method,
        regularizer: Regularizer,
        lam: float,
        precision: LossPrecision = "fp32",
    ) -> None:
        super().__init__()
        self.backbone, self.method, self.regularizer, self.lam = backbone, method, regularizer, lam
        self.loss_precision = precision

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        with view_groups(batch.n_views), loss_precision(self.loss_precision):
            return self._terms(batch)

    def _terms(self, batch: Batch) -> dict[str, Tensor]:
        with record_function("mim.backbone"):  # named for the profiler (benchmarks/gpu_profile.py)
            clean = self.backbone(batch.views)
        with record_function("mim.method"):
            noisy = self.regularizer.perturb(clean)
            method_terms = self.method.loss(noisy, batch)
        with record_function("mim.regularizer"):
            reg_terms = self.regularizer.loss(clean, noisy, batch)
        method_loss, reg = method_terms.pop("method"), reg_terms.pop("reg")
        return {
            "loss": method_loss + self.lam * reg,
            "loss_method": method_loss.detach(),
            "loss_reg": reg.detach(),
            **method_terms,
            **reg_terms,
        }


def build_model(config: RunConfig, num_classes: int) -> PretrainModel:
    backbone = build_backbone(config.model.backbone, config.model.width, config.data.image_size, config.model.stem)
    method = build_method(config.method, backbone, num_classes)
    regularizer = build_regularizer(config.regularizer, backbone, config.data.image_size, method.n_views)
    model = PretrainModel(backbone, method, regularizer, config.regularizer.lam, config.train.loss_precision)
    if config.train.bn_stats == "per_view" and method.n_views > 1:
        per_view_batchnorm(model)  # the official statistics: each view normalised on its own
        # DataParallel's per-GPU statistics (official ImageNet run), on the backbone as there: the official RC
        # decoder sits outside DataParallel and SimCLR's projector has no BatchNorm
        group_batchnorm(model.backbone, config.train.bn_group_size)
    return model
