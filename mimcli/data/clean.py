"""Clean (un-augmented) images of a file index, decoded batch by batch, for probe features.

A probe set that is an image folder (ImageNet's layout included) or a pack is listed with
`stream.index_split`; its images are decoded per batch and squashed to the probe resolution with
`datasets.square_uint8` (the decode memory mode uses), in DataLoader workers when asked. Memory then
holds one batch per worker, never the set, and the pixels equal memory mode's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from mimcli.data.datasets import square_uint8
from mimcli.data.images import ImageData
from mimcli.data.stream import ImageIndex, StepBatches, index_split, stream_steps
from mimcli.errors import UsageError


def folder_indexes(folder: str, train: str = "train", test: str = "test") -> tuple[ImageIndex, ImageIndex]:
    """(train, test) indexes of a probe folder: `test/` (else `val/`, class folders or flat with a labels
    file), or the same splits of a pack; both splits must name the same classes."""
    train_index, test_index = index_split(folder, train), index_split(folder, test)
    if test_index.classes != train_index.classes:
        raise UsageError(f"{folder}: train and test hold different class folders")
    return train_index, test_index


class CleanBatches(StepBatches):
    """Item k: (uint8 (b, 3, S, S) images k * batch_size onwards, in index order; int64 (b,) labels)."""

    def __init__(self, index: ImageIndex, image_size: int, batch_size: int) -> None:
        self.index, self.size, self.batch_size = index, image_size, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.index) / self.batch_size)

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        rows = range(k * self.batch_size, min((k + 1) * self.batch_size, len(self.index)))
        images = torch.stack([square_uint8(self.index.open(i), self.size) for i in rows])
        return images, self.index.labels[rows.start : rows.stop]


def clean_batches(
    index: ImageIndex, image_size: int, batch_size: int, workers: int = 0, pin: bool = False
) -> Iterator[tuple[Tensor, Tensor]]:
    """The index's images in order, batch_size at a time, decoded by `workers` processes (0: this one)."""
    return stream_steps(CleanBatches(index, image_size, batch_size), 0, workers, pin)


def decode_index(index: ImageIndex, image_size: int) -> ImageData:
    """Every image of the index in memory (what memory mode holds), decoded as `clean_batches` decodes."""
    images = torch.empty(len(index), 3, image_size, image_size, dtype=torch.uint8)
    for i in range(len(index)):
        images[i] = square_uint8(index.open(i), image_size)
    return ImageData(images, index.labels.clone(), list(index.classes))
