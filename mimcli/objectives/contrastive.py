"""Method losses as pure functions of tensors (no modules, no state), computed in fp32 outside autocast
(`precision.fp32_loss`; `train.loss_precision = "autocast"` is the faster, non-official option)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from mimcli.objectives.precision import fp32_loss


@fp32_loss
def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's NT-Xent: cosine similarity / temperature, 2N-2 negatives per anchor, mean over 2N anchors.

    Row i of z1 and row i of z2 are the two views of one image.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    # the positive of row i is row i + n (mod 2n), made on the device: a host copy would wait for the GPU
    targets = torch.arange(n, 3 * n, device=z.device).remainder_(2 * n)
    return F.cross_entropy(logits, targets)


@fp32_loss
def byol_loss(p: Tensor, z_target: Tensor) -> Tensor:
    """2 - 2 cos(p, z_target), averaged over the batch (the target carries no gradient)."""
    cos = F.cosine_similarity(p, z_target.detach(), dim=1)
    return (2 - 2 * cos).mean()


def byol_symmetric_loss(p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor) -> Tensor:
    """The official BYOL objective: the two directions *summed*, `(l(p1, t2) + l(p2, t1)).mean()`.

    Summing (not averaging) matters for BYOL + RC / + LBE: lambda is weighed against this sum.
    """
    return byol_loss(p1, t2) + byol_loss(p2, t1)


@fp32_loss
def barlow_twins_loss(z1: Tensor, z2: Tensor, offdiag_weight: float = 0.01) -> Tensor:
    """sum_i (1 - C_ii)^2 + w * sum_{i!=j} C_ij^2 with C the batch cross-correlation.

    As in the paper's reference code, z is L2-normalised before it is standardised over the batch,
    with the unbiased std (`torch.std`), so C carries the reference's (N-1)/N factor.
    """
    n = z1.shape[0]
    a = F.normalize(z1, dim=1)
    b = F.normalize(z2, dim=1)
    a = (a - a.mean(0)) / a.std(0).clamp_min(1e-6)
    b = (b - b.mean(0)) / b.std(0).clamp_min(1e-6)
    c = a.T @ b / n
    diagonal = torch.diagonal(c)
    on = (1 - diagonal).pow(2).sum()
    off = c.pow(2).sum() - diagonal.pow(2).sum()
    return on + offdiag_weight * off


@fp32_loss
def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels)
