"""Optimisers selected by name from [train]; their learning rate is set every step (mimcli.train.schedules)."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.optimizer import ParamsT

from mimcli.config import TrainSection
from mimcli.train.schedules import base_lr


class LARS(torch.optim.Optimizer):
    """LARS as the official InfoCL code executes it (SimCLR/modules/lars.py L45-L105): every parameter gets
    weight decay and the trust ratio eta * ||w|| / ||g + wd w||, and the learning rate enters the momentum
    buffer (classic momentum): v = m v + lr * trust * (g + wd w); w -= v. Its exclusion lists
    (["batch_normalization", "bias"]) are passed but never read (a TODO in its step), so BatchNorm and bias
    parameters are decayed and adapted too; a tensor whose norm is 0 keeps trust 0 and never moves.

    exclude_1d (train.lars_exclude_1d, not official): parameters with ndim <= 1 (biases, BatchNorm) get
    neither decay nor trust ratio, as the SimCLR / Barlow Twins papers' LARS. One guard differs from the
    official code: a zero gradient norm gives trust 1 (a zero update) where the official division gives NaN.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        exclude_1d: bool = False,
    ) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta, "exclude_1d": exclude_1d}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not (group["exclude_1d"] and p.ndim <= 1):  # decay and trust ratio
                    grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.norm(p), torch.norm(grad)
                    grad = grad.mul(torch.where(g_norm > 0, group["eta"] * w_norm / g_norm, 1.0))
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"].mul_(group["momentum"]).add_(grad, alpha=group["lr"])
                p.sub_(mu)
        return None


def build_optimizer(
    model: nn.Module, cfg: TrainSection, global_batch: int, device: torch.device
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        # One fused kernel for all parameters instead of a dozen small ops each (CUDA and CPU).
        fused = device.type in ("cuda", "cpu")
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return LARS(
        params,
        base_lr(cfg, global_batch),
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        exclude_1d=cfg.lars_exclude_1d,
    )
