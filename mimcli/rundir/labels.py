"""A run's human label ('SimCLR + RC'), used by the training summary and by the report's rows.

Its own module so that `mim report` labels runs without importing the training loop (mimcli.train).
"""

from __future__ import annotations

from mimcli.config import RunConfig, Unregistered


def describe_model(config: RunConfig, recorded: str | None = None) -> str:
    """The report's row label: 'SimCLR + RC', 'BYOL', 'Supervised + LBE'. `recorded`: the label run.json
    keeps, used when a section's plugin is not imported here (the reader knows only its name)."""
    if recorded and (isinstance(config.method, Unregistered) or isinstance(config.regularizer, Unregistered)):
        return recorded
    method, regularizer = config.method.label, config.regularizer.label  # each section declares its own
    return f"{method} + {regularizer}" if regularizer else method
