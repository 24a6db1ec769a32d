"""`ImageIndex`: one split of an image set as file references and labels, never the pixels.

In its own module so that stream mode (`stream.py`, which lists folders) and the pack
(`packed.py`, whose `PackedIndex` reads images out of one HDF5 file) both build on it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from mimcli.errors import UsageError

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass
class ImageIndex:
    """Paths (numpy bytes, UTF-8) and labels of one split; never the pixels."""

    paths: np.ndarray
    labels: Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> str:
        return bytes(self.paths[i]).decode()

    def select(self, index: Tensor) -> ImageIndex:
        return ImageIndex(self.paths[index.numpy()], self.labels[index], self.classes)

    def open(self, i: int) -> Image:
        """Image i as an RGB PIL image (a `packed.PackedIndex` reads its bytes from the pack instead)."""
        return open_rgb(self.path(i))


def open_rgb(path: str) -> Image:
    """A PIL image in RGB; a file PIL cannot read is a clear error naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            return handle.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise UsageError(f"cannot decode image {path}: {error}") from None
