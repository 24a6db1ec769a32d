"""Projector and predictor heads of REFERENCE.md (SimCLR, BYOL, Barlow Twins)."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool) -> nn.Sequential:
    """Linear - [BN] - ReLU - Linear: the two-layer head every method here uses."""
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden_dim))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
    return nn.Sequential(*layers)
