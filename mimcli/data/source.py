"""Where the training loop's augmented batches come from: images held in memory, or streamed from files.

Both sources take this rank's index batches for the epoch (`sampler.epoch_order`) and yield
(float views (n_views * B, 3, S, S) view-major, labels (B,)) on the device from a given step on;
the loop does not know which one it has. Memory mode is the fast path for sets that fit (CIFAR,
STL-10, small folders); stream mode keeps only file paths in memory (see `stream.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from mimcli.config import RunConfig
from mimcli.data.augment import BatchAugment, constant
from mimcli.data.images import ImageData
from mimcli.data.stream import ImageIndex, StreamBatches, stream_steps
from mimcli.errors import UsageError


class BatchSource(Protocol):
    def batches(
        self, order: Tensor, seed: int, rng: torch.Generator, start_step: int = 0
    ) -> Iterator[tuple[Tensor, Tensor]]: ...


class MemorySource:
    """uint8 images on the device; every view (crop included) drawn by `BatchAugment` from `rng`."""

    def __init__(self, data: ImageData, device: torch.device, augment: BatchAugment, n_views: int) -> None:
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.augment, self.n_views, self.device = augment, n_views, device

    @torch.no_grad()
    def batches(
        self, order: Tensor, seed: int, rng: torch.Generator, start_step: int = 0
    ) -> Iterator[tuple[Tensor, Tensor]]:
        for index in order[start_step:].to(self.device):
            images = self.images[index]
            yield torch.cat([self.augment(images, rng) for _ in range(self.n_views)]), self.labels[index]


class StreamSource:
    """Files decoded per step in worker processes (crop from the original image), then flip and colour
    on the device from `rng` (`BatchAugment.apply` with whole-image boxes: no second crop)."""

    def __init__(
        self, index: ImageIndex, device: torch.device, augment: BatchAugment, n_views: int, workers: int
    ) -> None:
        self.index, self.device, self.augment = index, device, augment
        self.n_views, self.workers = n_views, workers

    @torch.no_grad()
    def batches(
        self, order: Tensor, seed: int, rng: torch.Generator, start_step: int = 0
    ) -> Iterator[tuple[Tensor, Tensor]]:
        size, cfg = self.augment.out_size, self.augment.cfg
        dataset = StreamBatches(self.index, order, seed, size, self.n_views, cfg.crop_scale, cfg.crop_ratio)
        for views, labels in stream_steps(dataset, start_step, self.workers, self.device.type == "cuda"):
            views = views.to(self.device, non_blocking=True)
            params = self.augment.sample_params(len(views), size, size, self.device, rng)
            params.boxes = constant((0, 0, size, size), self.device, torch.int64).expand(len(views), 4)
            yield self.augment.apply(views, params), labels.to(self.device, non_blocking=True)


def load_train_data(cfg: RunConfig) -> ImageData | ImageIndex:
    """The pretraining set: decoded into memory, or (stream mode) an index of its files."""
    from mimcli.data.datasets import load_pretrain_data, seeded_subset
    from mimcli.data.stream import index_split, resolve_loader

    data = cfg.data
    if data.loader != "memory" and data.dataset == "imagefolder":
        index = seeded_subset(index_split(data.root, "train"), data.subset, cfg.train.seed)
        pack = Path(data.root).is_file()  # a pack (`mim pack`) is always streamed
        if pack or resolve_loader(data.loader, len(index), data.image_size, data.memory_gb) == "stream":
            return index
    elif data.loader == "stream":
        raise UsageError(
            f"data.loader='stream' reads image files: data.dataset={data.dataset!r} has none "
            "(use 'imagefolder', or data.loader='memory')"
        )
    return load_pretrain_data(
        data.dataset,
        data.root,
        data.image_size,
        data.subset,
        cfg.train.seed,
        data.download,
        data.shapes,
        data.stl10_split,
    )


def build_source(
    cfg: RunConfig, data: ImageData | ImageIndex, device: torch.device, augment: BatchAugment, n_views: int
) -> BatchSource:
    if isinstance(data, ImageIndex):
        return StreamSource(data, device, augment, n_views, cfg.data.workers)
    return MemorySource(data, device, augment, n_views)
