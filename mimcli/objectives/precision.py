"""The dtype losses compute in: at least float32, never lower than the input.

`.float()` would turn float64 inputs (the exact-equality tests) into float32, whose GEMM rounding
depends on the CPU's kernels and thread count; bf16 activations from autocast still become float32.
"""

from __future__ import annotations

import torch
from torch import Tensor


def at_least_fp32(x: Tensor) -> Tensor:
    """x in float32, or in its own dtype when that is wider (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
