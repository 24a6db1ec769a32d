"""HDF5 files written the safe way: under a temporary name beside the target, marked `complete` last,
then renamed onto it. A crash or an error leaves no file behind (packs and feature caches alike)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py

from mimcli.rundir.runs import check_free_space, temporary_beside


@contextlib.contextmanager
def atomic_h5(path: Path, needed: int = 0) -> Iterator[Any]:
    """The h5py.File to fill; on leaving the block it gets `complete = True` and is renamed onto `path`;
    on any error the temporary file is removed and the error propagates. `needed`: the bytes the data
    will take, checked free first (HDF5 cannot fail a write on a full disk without crashing: runs.py)."""
    check_free_space(path, needed)
    fd, tmp = temporary_beside(path)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as handle:
            yield handle
            handle.attrs["complete"] = True
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
