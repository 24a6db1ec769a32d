"""Regularisers that raise I(z, v) (RC, LBE) and the analysis baselines (MIB, IP, noise), one module each.

Importing the package registers the built-ins in this order, which is also the report's row order.
"""

from __future__ import annotations

# isort: off
from mimcli.regularizers import none, rc, lbe, mib, ip, noise  # noqa: F401  (registration order = report order)

# isort: on
from mimcli.regularizers.base import (
    REGULARIZERS,
    Features,
    Regularizer,
    build_regularizer,
    register_regularizer,
)

__all__ = ["REGULARIZERS", "Features", "Regularizer", "build_regularizer", "register_regularizer"]
