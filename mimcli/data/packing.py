"""`mim pack FOLDER OUT`: an image folder copied into one HDF5 file (layout and why: packed.py).

The files' bytes are copied unchanged, one file at a time (memory: one file), after a header check
so that a non-image fails here and not mid-training; the pack is written under a temporary name and
renamed (h5atomic.py), and an existing OUT is never overwritten.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mimcli.data.h5atomic import atomic_h5
from mimcli.data.index import decode_error, encode_paths
from mimcli.data.packed import EVAL_SPLITS, FORMAT, VERSION
from mimcli.data.stream import ImageIndex, index_split
from mimcli.errors import UsageError

CHUNK = 1 << 16  # 64 KiB: a random read touches one or two chunks per typical JPEG (checksummed per chunk)


def _write_split(handle: Any, name: str, folder: Path, index: ImageIndex) -> int:
    """Copy the index's files into group `name`, one file at a time."""
    from PIL import Image

    paths = [Path(index.path(i)) for i in range(len(index))]
    sizes = np.array([p.stat().st_size for p in paths], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    group = handle.create_group(name)
    total = int(offsets[-1])
    data = group.create_dataset(
        "data", shape=(total,), dtype=np.uint8, chunks=(min(CHUNK, max(1, total)),), fletcher32=True
    )
    for i, path in enumerate(paths):
        raw = path.read_bytes()
        if len(raw) != sizes[i]:
            raise UsageError(f"{path} changed while packing")
        try:
            Image.open(io.BytesIO(raw)).close()  # header check: a non-image fails here, not mid-training
        except Exception as error:  # whatever the decoder raises (OSError, SyntaxError, ValueError...)
            raise decode_error(str(path), error) from None
        data[offsets[i] : offsets[i + 1]] = np.frombuffer(raw, dtype=np.uint8)
    group.create_dataset("offsets", data=offsets)
    group.create_dataset("labels", data=index.labels.numpy().astype(np.int64))
    names = [str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p) for p in paths]
    group.create_dataset("names", data=encode_paths(names))
    group.attrs["classes"] = json.dumps(index.classes)
    return len(paths)


def pack_folder(folder: str | Path, out: str | Path, say: Callable[[str], None] | None = None) -> dict[str, int]:
    """Pack an image folder (any layout `stream.index_split` reads: train plus val/ or test/ if present)
    into one HDF5 file at `out`, written to a temporary name and renamed. Returns images per split."""
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder: `mim pack` reads an image folder (train/<class>/*.jpg ...)")
    if out.exists():
        raise UsageError(f"{out} exists: choose a new file name (mim never overwrites a file it did not write)")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a folder")
    indexes = {"train": index_split(folder, "train")}
    for split in EVAL_SPLITS:
        if (folder / split).is_dir():
            indexes[split] = index_split(folder, split)
    counts: dict[str, int] = {}
    needed = sum(os.stat(index.path(i)).st_size for index in indexes.values() for i in range(len(index)))
    with atomic_h5(out, needed) as handle:
        for split, index in indexes.items():
            if say is not None:
                say(f"packing {split}: {len(index)} images")
            counts[split] = _write_split(handle, split, folder, index)
        # the source folder as the file system's bytes: any name can be stored (HDF5 strings are UTF-8)
        handle.attrs.update({"format": FORMAT, "version": VERSION, "source": np.bytes_(os.fsencode(folder.resolve()))})
    return counts
