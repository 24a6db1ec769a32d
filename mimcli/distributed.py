"""Thin helpers over torch.distributed; every one is the identity in a single process.

Gradient scale (tested in tests/test_distributed.py). Every rank computes the *global* method loss
L from tensors gathered with `gather_with_grad`; the backward of that all_gather sums, into the
rank that owns a slice, the gradient of every rank's copy of L, so rank r receives W * dL/dz_r.
DistributedDataParallel then averages parameter gradients over the W ranks, which leaves exactly
dL/dtheta: the gradient of one process that saw the global batch. Terms computed locally (RC, BYOL,
MIB, IP, cross-entropy: means over the rank's own samples) come out as the mean over ranks, which
with equal shards is again the global-batch mean. `GlobalBatchNorm` follows the same rule, so
with it a W-rank step equals a one-process step on the concatenated batch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) sets RANK and WORLD_SIZE for every worker."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[None]:
    """The process group from torchrun's env vars for the length of a command, destroyed after.

    nccl when training on CUDA (each rank on cuda:LOCAL_RANK), gloo otherwise. Outside torchrun, or
    with a group already up (tests), this does nothing.
    """
    if is_distributed() or not launched_by_torchrun():
        yield
        return
    cuda = torch.cuda.is_available() if device == "auto" else torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (downloads, caches), the other ranks after it (reading what it left).

    Exception-safe: a rank that fails still reaches the barrier, so the others do not hang.
    """
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward: the sum over ranks of the gradient, this rank's slice of it."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # autograd may share the incoming one
        dist.all_reduce(grad)  # small tensors (projections, BatchNorm statistics): all_reduce is enough
        rows = grad.shape[0] // world_size()
        return grad[rank() * rows : (rank() + 1) * rows]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate x (same shape on every rank) along dim 0; gradients flow back to each rank's slice.

    The backward sums the incoming gradients over ranks (see the module docstring for why that,
    with DDP's averaging, gives the global-batch gradient).
    """
    if not is_distributed() or world_size() == 1:
        return x
    gathered: Tensor = _GatherWithGrad.apply(x)
    return gathered


def mean_over_ranks(x: Tensor) -> Tensor:
    """The element-wise mean of x over ranks (no gradient): for logging epoch means."""
    if not is_distributed() or world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / world_size()


def shard(n: int) -> slice:
    """This rank's contiguous share of n items (ceil(n / W) each; the last ranks may hold fewer)."""
    per = -(-n // world_size())
    return slice(min(rank() * per, n), min((rank() + 1) * per, n))


@torch.no_grad()
def gather_shards(x: Tensor, n: int) -> Tensor:
    """Undo `shard`: every rank's rows of x, concatenated in rank order (n rows in all)."""
    if not is_distributed() or world_size() == 1:
        return x
    per = -(-n // world_size())
    padded = x.new_zeros((per, *x.shape[1:]))
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:n]


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the batch of every rank, on any device.

    One all_gather (with gradient) of each rank's (count, mean, sum of squared deviations), combined
    exactly; the gradient flows back through the gather, so forward, backward and running statistics
    are those of BatchNorm on the concatenated batch. On CUDA torch's fused SyncBatchNorm is used
    instead (`convert_batchnorm`); this is the portable path (CPU / gloo) and what the tests check.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = (1, channels) + (1,) * (x.dim() - 2)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in fp32 at least
        mean = xf.mean(dims)
        m2 = (xf - mean.view(shape)).square().sum(dims)
        count = mean.new_full((1,), x.numel() / channels)
        stats = gather_with_grad(torch.cat([count, mean, m2]).unsqueeze(0))
        counts, means, m2s = stats[:, :1], stats[:, 1 : 1 + channels], stats[:, 1 + channels :]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        m2 = m2s.sum(0) + (counts * (means - mean).square()).sum(0)
        if self.track_running_stats:
            # the buffers exist whenever track_running_stats is set (torch's _NormBase registers them)
            assert self.num_batches_tracked is not None
            assert self.running_mean is not None
            assert self.running_var is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_((m2 / (total - 1)).to(self.running_var.dtype), momentum)
        y = (xf - mean.view(shape)) * torch.rsqrt(m2 / total + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def _to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm*d below module replaced by GlobalBatchNorm sharing its parameters and buffers
    (per-view layers, models/viewnorm.py, stay and switch to global statistics per view)."""
    if hasattr(module, "synced"):
        # a per-view layer (models/viewnorm.py); setattr: nn.Module types attributes as Tensor | Module, not bool
        setattr(module, "synced", True)  # noqa: B010
        return module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (GlobalBatchNorm, nn.SyncBatchNorm)
    ):
        return swap_batchnorm(module, GlobalBatchNorm)
    for name, child in module.named_children():
        module.add_module(name, _to_global_batchnorm(child))
    return module


def swap_batchnorm(module: nn.modules.batchnorm._BatchNorm, cls: type[GlobalBatchNorm]) -> GlobalBatchNorm:
    """A `cls` layer sharing module's parameters and buffers (so state_dict keys and the optimiser's
    parameters are unchanged)."""
    converted = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
    if module.affine:
        converted.weight, converted.bias = module.weight, module.bias
    if module.track_running_stats:
        converted.running_mean, converted.running_var = module.running_mean, module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
    converted.train(module.training)
    return converted


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm over the global batch, in place (parameters, buffers and state_dict keys unchanged):
    torch's SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere and for per-view statistics."""
    if device.type == "cuda" and not any(hasattr(m, "synced") for m in module.modules()):
        synced: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(module)  # type: ignore[no-untyped-call]
        return synced
    return _to_global_batchnorm(module)


def wrap_model(model: nn.Module, device: torch.device, sync_batchnorm: bool = False) -> nn.Module:
    """DistributedDataParallel when launched by torchrun, the model itself otherwise.

    sync_batchnorm (a Method's class attribute) first converts the model's BatchNorm layers, in
    place, to global-batch statistics; parameters stay the same objects, so an optimiser built on
    the model before still holds them.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    if sync_batchnorm and world_size() > 1:
        converted = convert_batchnorm(model, device)
        assert converted is model, "the root module must not itself be a BatchNorm layer"
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: this rank's GPU (cuda:LOCAL_RANK under torchrun) or the CPU; `cuda` alone also maps to the rank's GPU."""
    from mimcli.errors import UsageError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but no CUDA device is available")
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank() if is_distributed() else 0)
    return device
