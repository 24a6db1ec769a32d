"""One training step's input, shared by the loop, the methods and the regularisers (so neither imports the other)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Batch:
    """One training step's input: augmented views stacked view-major, and labels of the images."""

    views: Tensor
    labels: Tensor
    n_views: int
