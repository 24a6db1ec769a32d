"""Method losses as pure functions of tensors (no modules, no state), computed in fp32 or wider."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from mimcli.objectives.precision import at_least_fp32


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's NT-Xent: cosine similarity / temperature, 2N-2 negatives per anchor, mean over 2N anchors.

    Row i of z1 and row i of z2 are the two views of one image.
    """
    z = F.normalize(at_least_fp32(torch.cat([z1, z2])), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def byol_loss(p: Tensor, z_target: Tensor) -> Tensor:
    """2 - 2 cos(p, z_target), averaged over the batch (the target carries no gradient)."""
    cos = F.cosine_similarity(at_least_fp32(p), at_least_fp32(z_target.detach()), dim=1)
    return (2 - 2 * cos).mean()


def barlow_twins_loss(z1: Tensor, z2: Tensor, offdiag_weight: float = 0.01) -> Tensor:
    """sum_i (1 - C_ii)^2 + w * sum_{i!=j} C_ij^2 with C the batch cross-correlation.

    As in the paper's reference code, z is L2-normalised before it is standardised over the batch.
    """
    n = z1.shape[0]
    a = F.normalize(at_least_fp32(z1), dim=1)
    b = F.normalize(at_least_fp32(z2), dim=1)
    a = (a - a.mean(0)) / a.std(0, unbiased=False).clamp_min(1e-6)
    b = (b - b.mean(0)) / b.std(0, unbiased=False).clamp_min(1e-6)
    c = a.T @ b / n
    diagonal = torch.diagonal(c)
    on = (1 - diagonal).pow(2).sum()
    off = c.pow(2).sum() - diagonal.pow(2).sum()
    return on + offdiag_weight * off


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(at_least_fp32(logits), labels)
