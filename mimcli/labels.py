"""A run's human label ('SimCLR + RC'), used by the training summary and by the report's rows.

Its own module so that `mim report` labels runs without importing the training loop (train.py).
"""

from __future__ import annotations

from mimcli.config import RunConfig


def describe_model(config: RunConfig) -> str:
    """The report's row label: 'SimCLR + RC', 'BYOL', 'Supervised + LBE'."""
    names = {"simclr": "SimCLR", "byol": "BYOL", "barlow": "Barlow Twins", "supervised": "Supervised"}
    label = names[config.method.name]
    kind = config.regularizer.kind
    return label if kind == "none" else f"{label} + {kind.upper() if kind != 'noise' else 'noise'}"
