"""A run's human label ('SimCLR + RC'), used by the training summary and by the report's rows.

Its own module so that `mim report` labels runs without importing the training loop (train.py).
"""

from __future__ import annotations

from mimcli.config import RunConfig


def describe_model(config: RunConfig) -> str:
    """The report's row label: 'SimCLR + RC', 'BYOL', 'Supervised + LBE'."""
    method, regularizer = config.method.label, config.regularizer.label  # each section declares its own
    return f"{method} + {regularizer}" if regularizer else method
