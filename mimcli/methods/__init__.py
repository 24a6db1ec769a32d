"""Methods: heads + a pure loss, one module each, registered by name. docs/extending.md adds one.

Importing the package registers the built-ins in this order, which is also the report's row order.
"""

from __future__ import annotations

# isort: off
from mimcli.methods import simclr, byol, barlow, supervised  # noqa: F401  (registration order = report order)

# isort: on
from mimcli.methods.base import (
    METHODS,
    Method,
    ProjectorSection,
    build_method,
    register_method,
)

__all__ = ["METHODS", "Method", "ProjectorSection", "build_method", "register_method"]
