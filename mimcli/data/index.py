"""`ImageIndex`: one split of an image set as file references and labels, never the pixels.

In its own module so that stream mode (`stream.py`, which lists folders) and the pack
(`packed.py`, whose `PackedIndex` reads images out of one HDF5 file) both build on it without a cycle.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import numpy as np
from torch import Tensor

from mimcli.errors import UsageError

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass
class ImageIndex:
    """Paths (numpy bytes, the file system's own bytes: `encode_paths`) and labels of one split; never the pixels."""

    paths: np.ndarray
    labels: Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> str:
        return os.fsdecode(bytes(self.paths[i]))

    def select(self, index: Tensor) -> ImageIndex:
        return ImageIndex(self.paths[index.numpy()], self.labels[index], self.classes)

    def open(self, i: int) -> Image:
        """Image i as an RGB PIL image (a `packed.PackedIndex` reads its bytes from the pack instead)."""
        return open_rgb(self.path(i))


def encode_paths(paths: Iterable[str | os.PathLike[str]]) -> np.ndarray:
    """Paths as the file system's bytes (`os.fsencode`): any name works, non-ASCII and non-UTF-8 ones
    included (numpy's bytes dtype would encode str as ASCII), and `ImageIndex.path` gives it back."""
    return np.array([os.fsencode(p) for p in paths], dtype=np.bytes_)


def open_rgb(path: str, source: IO[bytes] | None = None) -> Image:
    """A PIL image in RGB, read from `path` (or from `source`, named `path` in errors). Whatever the
    decoder raises on a bad file (OSError, SyntaxError, ValueError, a decompression bomb, MemoryError...)
    becomes one UsageError naming the file."""
    from PIL import Image

    try:
        with Image.open(source or path) as handle:
            return handle.convert("RGB")
    except Exception as error:
        raise decode_error(path, error) from None


def decode_error(path: str, error: Exception) -> UsageError:
    """'cannot decode image PATH: first line of the decoder's message' (its type when it has none)."""
    detail = str(error).strip().splitlines()
    return UsageError(f"cannot decode image {path}: {detail[0] if detail else type(error).__name__}")
