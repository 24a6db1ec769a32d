"""Pooled layer2/3/4 features of a frozen backbone: one forward (`encode`) that the in-memory (`extract`) and the
streamed extraction (mimcli.probe.cache) both run, and the `Features` of one split that probes read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mimcli import distributed
from mimcli.errors import UsageError

LAYERS = ("layer2", "layer3", "layer4")


def layer_names(layers: list[int]) -> list[str]:
    """[2, 4] -> ["layer2", "layer4"], checked against the blocks the backbone exposes."""
    names = [f"layer{layer}" for layer in layers]
    unknown = [name for name in names if name not in LAYERS]
    if unknown or not names:
        raise UsageError(f"layers {layers}: choose from 2, 3, 4 (pooled ResNet blocks)")
    return names


@dataclass
class Features:
    """Cached features of one split, on the CPU unless moved."""

    layers: dict[str, Tensor]
    labels: Tensor
    targets: dict[str, Tensor] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def matrix(self, layers: list[int]) -> Tensor:
        """The requested pooled blocks side by side, (n, sum of widths)."""
        names = layer_names(layers)
        return torch.cat([self.layers[name] for name in names], dim=1) if len(names) > 1 else self.layers[names[0]]

    def target(self, key: str | None) -> Tensor:
        return self.labels if key is None else self.targets[key]


@torch.no_grad()
def extract(
    backbone: nn.Module,
    images: Tensor,
    mean: list[float],
    std: list[float],
    device: torch.device,
    batch_size: int = 512,
    precision: str = "fp32",
    on_batch: Callable[[], None] | None = None,
) -> dict[str, Tensor]:
    """Pooled layer2/3/4 features of uint8 images (eval mode; `precision` as `encode`), float32 on the CPU.

    With a process group up, every rank encodes its contiguous share and all get every row, in order.
    """
    backbone.eval()
    n = len(images)
    images = images[distributed.shard(n)]
    outputs: dict[str, list[Tensor]] = {name: [] for name in LAYERS}
    for chunk in torch.split(images, batch_size):
        pooled = encode(backbone, chunk, mean, std, device, precision)
        for name in LAYERS:
            outputs[name].append(pooled[name])
        if on_batch is not None:
            on_batch()
    return {name: distributed.gather_shards(torch.cat(parts), n).cpu() for name, parts in outputs.items()}


@torch.no_grad()
def encode(
    backbone: nn.Module,
    images: Tensor,
    mean: list[float],
    std: list[float],
    device: torch.device,
    precision: str = "fp32",
) -> dict[str, Tensor]:
    """Pooled layer2/3/4 float32 features of one uint8 batch, normalised: the one forward both the in-memory
    and the streamed extraction run, so their features are the same. precision (probe.precision): fp32, as
    the official eval_lr.py, or bf16 autocast (faster on GPUs and AMX CPUs, rounds the features)."""
    cuda = device.type == "cuda"
    shift = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    scale = torch.tensor(std, device=device).view(1, 3, 1, 1)
    x = images.to(device, non_blocking=True).float().div_(255).sub_(shift).div_(scale)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        pooled = backbone(x)
    return {name: pooled[name].float() for name in LAYERS}
