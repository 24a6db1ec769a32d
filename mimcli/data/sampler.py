"""Which images each rank sees at each step of an epoch: one seeded permutation, sharded by rank.

Both data paths (memory and stream) take their batches from `epoch_order`, so they visit the same
images in the same order for the same seed, and a resumed run only needs (epoch, step) to continue
exactly where it stopped: the order is recomputed, never stored.
"""

from __future__ import annotations

import torch
from torch import Tensor


def epoch_order(n: int, seed: int, per_rank_batch: int, world: int = 1, rank: int = 0) -> Tensor:
    """(steps, per_rank_batch) int64 indices of this rank's batches for the epoch whose seed is `seed`.

    A permutation of range(n) from `seed`, cut into global batches of per_rank_batch * world (the
    last partial one dropped); rank r takes the r-th slice of every global batch, so across ranks
    every kept image appears exactly once per epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    per_step = per_rank_batch * world
    steps = n // per_step
    return order[: steps * per_step].view(steps, world, per_rank_batch)[:, rank]
