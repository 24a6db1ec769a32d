"""Projector and predictor heads of the official code (SimCLR, BYOL, Barlow Twins: docs/reference.md#heads)."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int | None, out_dim: int, batch_norm: bool) -> nn.Sequential:
    """Linear - [BN] - ReLU - Linear: the two-layer head every method here uses. hidden_dim None: in_dim,
    as the official projectors (Linear(n_features, n_features): 512 on ResNet-18, 2048 on ResNet-50)."""
    hidden_dim = hidden_dim or in_dim
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden_dim))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
    return nn.Sequential(*layers)
