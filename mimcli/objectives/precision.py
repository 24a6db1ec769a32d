"""Numeric precision: the autocast dtype a run trains in (`train.precision`), and where the loss
functions compute: fp32 outside autocast (the official code's precision), or, as the named option
`train.loss_precision = "autocast"`, in whatever autocast picks (bf16 matmuls).

The pure loss functions carry `@fp32_loss`; `PretrainModel.forward` chooses the mode for its step
with `loss_precision(...)`, so no function takes a precision argument and the loop does not branch.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor

LossPrecision = Literal["fp32", "autocast"]
_MODE: contextvars.ContextVar[LossPrecision] = contextvars.ContextVar("loss_precision", default="fp32")
F = TypeVar("F", bound=Callable[..., Tensor])


@contextlib.contextmanager
def loss_precision(mode: LossPrecision) -> Iterator[None]:
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def promote(value: Any) -> Any:
    """Floating tensors to at least fp32 (float64 stays float64, so double-precision tests stay exact)."""
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.to(torch.promote_types(value.dtype, torch.float32))
    return value


def fp32_loss(fn: F) -> F:
    """Run fn with autocast off and its tensor arguments promoted to fp32, unless the mode is "autocast"."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Tensor:
        if _MODE.get() == "autocast":
            return fn(*args, **kwargs)
        device = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return fn(*(promote(a) for a in args), **{k: promote(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls/convolutions beat fp32 on this CPU (see docs/benchmarks.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_fast_bf16() else None
