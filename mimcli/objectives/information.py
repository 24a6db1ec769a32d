"""Estimators of I(z, v) and the analysis baselines' terms, as pure functions of tensors, computed in
fp32 outside autocast (`precision.fp32_loss`)."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor
from torch.nn import functional as F

from mimcli.objectives.precision import fp32_loss


@fp32_loss
def reconstruction_loss(reconstruction: Tensor, target: Tensor, n_views: int) -> Tensor:
    """RC: mean-reduced MSE per view, summed over the views (rows are view-major: [v1; v2])."""
    return cast(
        Tensor, sum(F.mse_loss(r, t) for r, t in zip(reconstruction.chunk(n_views), target.chunk(n_views)))
    )  # sum() of no terms would be 0


@fp32_loss
def lbe_bound(noisy: Tensor, clean: Tensor, rho: float = 0.05) -> Tensor:
    """LBE's uniformity form of the InfoNCE bound: -mean_k log sum_l exp(-rho * ||z_k - f(v_l)||^2).

    `noisy` are the stochastic representations z_k = f(v_k) + sigma * eps, `clean` the means f(v_l);
    as in the official `InfoNCE(mu, z)`, each noisy z_k anchors a log-sum over the clean means (the
    positive term and the log N constant are dropped). Larger means more spread.
    """
    distances = torch.cdist(noisy, clean).pow(2)  # row k: anchor z_k; columns: the clean f(v_l)
    return -torch.logsumexp(-rho * distances, dim=1).mean()


@fp32_loss
def mse_between_views(features: Tensor, n_views: int = 2) -> Tensor:
    """Element-mean MSE between the first two views' features (MIB and IP)."""
    first, second = features.chunk(n_views)[:2]
    return F.mse_loss(first, second)
