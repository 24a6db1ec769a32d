"""One HDF5 file of encoded images (`mim pack`, written by packing.py): an image folder for clusters
where millions of small files are slow to open. `PackedIndex` reads it image by image.

Why one HDF5 file and not WebDataset tar shards: stream mode draws every batch from a seeded
permutation of the whole set (`sampler.epoch_order`), which is what makes a resumed run and every
rank's share exact. That needs the i-th image in O(1). A pack stores each split's files back to
back in one uint8 dataset with an offsets array, so image i is one slice read; tar shards are read
sequentially through a shuffle buffer, which would change the order (and the batches) from the
folder's. h5py is already a dependency; tarfile random access would need its own offset index.

Layout (the bytes are the original files, unchanged, so decoding gives the folder's pixels):

    /<split>/data     uint8 (total bytes,)   every file of the split back to back (fletcher32 chunks)
    /<split>/offsets  int64 (n + 1,)         image i is data[offsets[i]:offsets[i + 1]]
    /<split>/labels   int64 (n,)             as `stream.index_split` labels the folder
    /<split>/names    bytes (n,)             each file's path relative to the folder (provenance)
    /<split> attrs:   classes (JSON)
    / attrs:          format = "mim-pack", version, source, complete
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch
from torch import Tensor

from mimcli.data.index import ImageIndex, open_rgb
from mimcli.errors import DataNotFoundError, UsageError

if TYPE_CHECKING:
    from PIL.Image import Image

FORMAT = "mim-pack"
VERSION = 1
EVAL_SPLITS = ("val", "test")


@dataclass
class PackedIndex(ImageIndex):
    """`ImageIndex` over one split of a pack: `paths` holds row numbers in the pack, labels are in
    memory, bytes are read per image. The HDF5 file is opened lazily in each process (DataLoader
    workers fork), so every code path that takes an ImageIndex streams from a pack unchanged."""

    file: str = ""
    split: str = "train"
    # (pid, open file, the split's data set, its offsets): opened once per process; offsets are 8 bytes an
    # image, less than a folder's paths
    _handle: tuple[int, Any, Any, np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None}  # a pickled index (spawned worker) opens its own file

    def select(self, index: Tensor) -> PackedIndex:
        return PackedIndex(self.paths[index.numpy()], self.labels[index], self.classes, self.file, self.split)

    def path(self, i: int) -> str:
        return f"{self.file}[{self.split}/{int(self.paths[i])}]"

    def read(self, i: int) -> bytes:
        """The encoded file of image i, as it was in the folder (data set and offsets kept open per process:
        one HDF5 read per image; h5py's per-call lookups would dominate a 60 kB read otherwise)."""
        if self._handle is None or self._handle[0] != os.getpid():
            handle = h5py.File(self.file, "r")
            group = handle[self.split]
            self._handle = (os.getpid(), handle, group["data"], group["offsets"][...])
        _, _, data, offsets = self._handle
        row = int(self.paths[i])
        return bytes(data[offsets[row] : offsets[row + 1]].tobytes())

    def open(self, i: int) -> Image:
        """Image i as an RGB PIL image; a file PIL cannot read is a clear error naming it."""
        return open_rgb(self.path(i), io.BytesIO(self.read(i)))


def pack_splits(file: str | Path) -> list[str]:
    """The splits a complete pack holds; anything else is a one-line UsageError."""
    file = Path(file)
    try:
        with h5py.File(file, "r") as handle:
            if handle.attrs.get("format") != FORMAT or not handle.attrs.get("complete", False):
                raise UsageError(f"{file} is not a complete mim pack (write one with `mim pack FOLDER {file}`)")
            return list(handle.keys())
    except OSError as error:
        raise UsageError(f"{file}: not an HDF5 file ({str(error).splitlines()[0]})") from None


def packed_index(file: str | Path, split: str) -> PackedIndex:
    """Split `train`, or an evaluation split (`split` itself, else val, else test), as `index_split` picks."""
    file = Path(file)
    splits = pack_splits(file)
    wanted = ["train"] if split == "train" else list(dict.fromkeys((split, *EVAL_SPLITS)))
    name = next((s for s in wanted if s in splits), None)
    if name is None:
        raise DataNotFoundError(f"{file} holds no {' or '.join(wanted)} split (it holds {', '.join(splits)})")
    with h5py.File(file, "r") as handle:
        group = handle[name]
        missing = [key for key in ("data", "offsets", "labels") if key not in group]
        if missing or "classes" not in group.attrs:
            what = f"data set {name}/{missing[0]}" if missing else f"attribute {name}.classes"
            raise UsageError(f"{file} has no {what}: not a complete mim pack (write it again with `mim pack`)")
        labels = torch.from_numpy(group["labels"][...].astype(np.int64))
        offsets = group["offsets"].shape
        try:
            classes = json.loads(group.attrs["classes"])
        except ValueError as error:
            raise UsageError(f"{file}: attribute {name}.classes is not JSON ({error})") from None
    if offsets != (len(labels) + 1,):
        raise UsageError(f"{file}: {name}/offsets holds {offsets} entries for {len(labels)} images")
    return PackedIndex(np.arange(len(labels)), labels, classes, str(file), name)
