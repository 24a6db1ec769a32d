"""Per-seed summaries and the seeded validation split shared by the linear and ridge probes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from mimcli.probe.records import Summary

VAL_FRACTION = 0.1


def summary(values: list[float]) -> Summary:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "values": values}


def val_split(n: int, seed: int, fraction: float = VAL_FRACTION) -> tuple[Tensor, Tensor]:
    """(fit index, val index): a seeded random `fraction` of range(n) held out (at least one item)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = max(1, round(fraction * n))
    return order[cut:].sort().values, order[:cut].sort().values


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run on one intra-op thread on the CPU: the linear and ridge probes' kernels are small (a
    128-row batch, a D x D solve), and waking a second OpenMP thread for each costs more than it
    saves (20x slower on a busy 2-core box). kNN's large similarity matmuls keep torch's threads."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


STANDARDIZE_EPS = 1e-6  # MAE's probe: BatchNorm1d(affine=False, eps=1e-6) before the linear layer


def standardize(train_x: Tensor, test_x: Tensor) -> tuple[Tensor, Tensor]:
    """Both splits centred and scaled per dimension by the train split's mean and variance.

    A probe trained by SGD at a fixed rate on raw features reads their scale as much as their content
    (a random network's pooled features can be 50x smaller than a trained one's and barely move it);
    standardised, the same probe compares what the features hold.
    """
    mean = train_x.mean(dim=0)
    scale = torch.rsqrt(train_x.var(dim=0, unbiased=False) + STANDARDIZE_EPS)
    return (train_x - mean) * scale, (test_x - mean) * scale
