"""Estimators of I(z, v) and the analysis baselines' terms, as pure functions of tensors (fp32 or wider)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from mimcli.objectives.precision import at_least_fp32


def reconstruction_loss(reconstruction: Tensor, target: Tensor, n_views: int) -> Tensor:
    """RC: mean-reduced MSE per view, summed over the views (rows are view-major: [v1; v2])."""
    return sum(
        F.mse_loss(at_least_fp32(r), at_least_fp32(t))
        for r, t in zip(reconstruction.chunk(n_views), target.chunk(n_views))
    )


def lbe_bound(noisy: Tensor, clean: Tensor, rho: float = 0.05) -> Tensor:
    """LBE's uniformity form of the InfoNCE bound: -mean_k log sum_l exp(-rho * ||z_l - f(v_k)||^2).

    `noisy` are the stochastic representations z_l = f(v_l) + sigma * eps, `clean` the means f(v_k);
    the positive term and the log N constant are dropped (REFERENCE.md). Larger means more spread.
    """
    distances = torch.cdist(at_least_fp32(clean), at_least_fp32(noisy)).pow(2)
    return -torch.logsumexp(-rho * distances, dim=1).mean()


def mse_between_views(features: Tensor, n_views: int = 2) -> Tensor:
    """Element-mean MSE between the first two views' features (MIB and IP)."""
    first, second = features.chunk(n_views)[:2]
    return F.mse_loss(at_least_fp32(first), at_least_fp32(second))
