"""Per-view BatchNorm statistics inside one forward pass over all views.

The official code forwards each view separately, so every BatchNorm layer (backbone, heads, RC
decoder, BYOL target) normalises a view with that view's batch statistics and updates its running
statistics once per view. Forwarding the views stacked ([v1; v2], 2N rows) is faster but mixes
them. `PerViewBatchNorm` keeps the one pass and recovers the official computation: in training it
normalises each view's rows with their own statistics, one after the other, exactly as two forwards
would (outputs, gradients, running statistics and num_batches_tracked). Under DDP
(`distributed.convert_batchnorm` sets `synced`) each view's statistics are those of that view
over every rank: SyncBatchNorm per view.

How many views the rows hold is set for a forward pass with `view_groups(n)`; outside it (probes,
evaluation, one-view methods) the layer is an ordinary BatchNorm.

`group_size` (train.bn_group_size, set on the backbone's layers): each view's rows are further
normalised in consecutive groups of that many rows, as the official ImageNet run's DataParallel
(4 GPUs, 256 rows of each view on each): every group with its own statistics, and the running
statistics updated from each view's first group only (DataParallel keeps the in-place buffer
updates of the replica on the first GPU and drops the others').
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from mimcli.distributed import GlobalBatchNorm, swap_batchnorm

_GROUPS: contextvars.ContextVar[int] = contextvars.ContextVar("view_groups", default=1)


@contextlib.contextmanager
def view_groups(n: int) -> Iterator[None]:
    """Within this block, per-view BatchNorm layers split their batch into n equal, view-major parts."""
    token = _GROUPS.set(n)
    try:
        yield
    finally:
        _GROUPS.reset(token)


class PerViewBatchNorm(GlobalBatchNorm):
    """BatchNorm1d/2d whose training statistics are per view (see the module docstring)."""

    synced = False  # True: each view's statistics over every rank (set by distributed.convert_batchnorm)
    group_size = 0  # > 0: statistics per group of this many rows of each view (see the module docstring)

    def forward(self, x: Tensor) -> Tensor:
        groups = _GROUPS.get() if self.training else 1
        step = GlobalBatchNorm.forward if self.synced else nn.modules.batchnorm._BatchNorm.forward
        if groups == 1:
            return step(self, x)
        if x.shape[0] % groups:
            raise ValueError(f"{x.shape[0]} rows do not split into {groups} views")
        if not self.group_size:
            return torch.cat([step(self, part) for part in x.chunk(groups)])
        out = []
        for view in x.chunk(groups):
            if view.shape[0] % self.group_size:
                raise ValueError(
                    f"train.bn_group_size={self.group_size} does not divide the {view.shape[0]} rows of a view "
                    "on this process"
                )
            first, *rest = torch.split(view, self.group_size)
            out.append(step(self, first))  # the only group whose statistics reach the running buffers
            out += [self._batch_statistics_only(part) for part in rest]
        return torch.cat(out)

    def _batch_statistics_only(self, x: Tensor) -> Tensor:
        """Training-mode BatchNorm of x that leaves the running statistics untouched."""
        return nn.functional.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def group_batchnorm(module: nn.Module, group_size: int) -> nn.Module:
    """Set `group_size` on every per-view BatchNorm layer below module (see the module docstring)."""
    for layer in module.modules():
        if isinstance(layer, PerViewBatchNorm):
            layer.group_size = group_size
    return module


def per_view_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm layer below module replaced, in place, by PerViewBatchNorm sharing its
    parameters and buffers (state_dict keys unchanged, so saved backbones load as plain ones)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, PerViewBatchNorm):
        return swap_batchnorm(module, PerViewBatchNorm)
    for name, child in module.named_children():
        module.add_module(name, per_view_batchnorm(child))
    return module
