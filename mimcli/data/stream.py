"""Image sets read from their files batch by batch, for sets too large to decode into memory.

An `ImageIndex` lists file paths and labels only (a numpy bytes array: forked DataLoader workers
share it without the copy-on-write growth a Python list of strings causes). `StreamBatches` is a
map-style dataset whose item is one *step*: it decodes that step's images with PIL in a worker
process, draws each view's RandomResizedCrop box from the ORIGINAL image and its aspect ratio
(torchvision's `RandomResizedCrop.get_params`, through `augment.sample_crop_boxes`), then crops and
resizes it with PIL's bilinear filter as torchvision does on PIL images, and returns uint8 views at
the training size. Flip, colour jitter, grayscale and normalisation then run batched on the device
(`BatchAugment.apply` with full-image boxes, so the resample is the identity plus the flip).

Crop boxes come from a generator seeded by (epoch seed, step): the views do not depend on the
number of workers, and a run resumed at step k draws what an uninterrupted run draws at step k.

Layouts: `<split>/<class>/*.jpg` (ImageNet's train/<wnid>/*.JPEG, any image folder), ImageNet's
flat `val/` with a labels file beside it (`val_labels.txt`: "<file> <class>" per line, or the
Kaggle/ILSVRC `LOC_val_solution.csv`), and one HDF5 file of the encoded images (`mim pack`, packed.py).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mimcli.data.augment import CROP_TRIES, sample_crop_boxes
from mimcli.data.datasets import IMAGE_SUFFIXES, image_folder_split, list_image_folder
from mimcli.data.index import ImageIndex as ImageIndex  # re-exported: stream mode's index type
from mimcli.data.index import encode_paths
from mimcli.errors import DataNotFoundError, UsageError

VAL_LABEL_FILES = ("val_labels.txt", "LOC_val_solution.csv")


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def index_class_folders(folder: Path) -> ImageIndex:
    """`folder/<class>/**/<image>` (or unlabeled images directly in `folder`), listed as memory mode lists it."""
    files, classes = list_image_folder(folder)
    return ImageIndex(
        encode_paths(p for p, _ in files),
        torch.tensor([label for _, label in files], dtype=torch.long),
        classes,
    )


def read_val_labels(path: Path) -> dict[str, str]:
    """File stem -> class name from `val_labels.txt` ("<file> <class>") or `LOC_val_solution.csv`."""
    table: dict[str, str] = {}
    with path.open(newline="") as handle:
        if path.suffix == ".csv":  # ImageId,PredictionString ("n01751748 x y x y ...")
            for row in csv.DictReader(handle):
                table[row["ImageId"]] = row["PredictionString"].split()[0]
        else:
            for line in handle:
                parts = line.split()
                if len(parts) >= 2:
                    table[Path(parts[0]).stem] = parts[1]
    return table


def index_flat_val(folder: Path, labels_file: Path, classes: list[str]) -> ImageIndex:
    """ImageNet's flat val/ folder, labelled by a labels file, in the train split's class order."""
    table = read_val_labels(labels_file)
    position = {name: i for i, name in enumerate(classes)}
    files = _images_under(folder)
    missing = [p.name for p in files if table.get(p.stem) not in position]
    if missing:
        raise UsageError(f"{labels_file}: no known class for {len(missing)} images in {folder} (first: {missing[0]})")
    labels = torch.tensor([position[table[p.stem]] for p in files], dtype=torch.long)
    return ImageIndex(encode_paths(files), labels, classes)


def index_split(root: str | Path, split: str) -> ImageIndex:
    """The train split (`root/train/<class>/` or `root/<class>/`) or the evaluation split
    (`root/<split>/`, else `root/val/` or `root/test/`, with class folders or flat with a labels file).
    A file as root is a pack written by `mim pack`, indexed by `packed.packed_index`."""
    root = Path(root)
    if root.is_file():
        from mimcli.data.packed import packed_index

        return packed_index(root, split)
    if split == "train":
        return index_class_folders(image_folder_split(root, "train"))
    folder = next((root / name for name in dict.fromkeys((split, "val", "test")) if (root / name).is_dir()), None)
    if folder is None:
        raise DataNotFoundError(f"no evaluation split under {root}: expected {root}/val or {root}/test")
    if any(p.is_dir() for p in folder.iterdir()):
        return index_class_folders(folder)
    labels_file = next((f for name in VAL_LABEL_FILES for f in (root / name, folder / name) if f.is_file()), None)
    if labels_file is None:
        raise DataNotFoundError(f"{folder} is flat: put one of {', '.join(VAL_LABEL_FILES)} in {root}")
    return index_flat_val(folder, labels_file, index_class_folders(image_folder_split(root, "train")).classes)


def decoded_bytes(n: int, image_size: int) -> int:
    """What memory mode would hold: n uint8 images of 3 x image_size x image_size."""
    return n * 3 * image_size * image_size


def resolve_loader(loader: str, n: int, image_size: int, memory_gb: float) -> str:
    """`auto` streams when the decoded set would exceed `memory_gb` (docs/scale.md); else as asked."""
    if loader != "auto":
        return loader
    return "stream" if decoded_bytes(n, image_size) > memory_gb * 2**30 else "memory"


def step_generator(seed: int, step: int) -> torch.Generator:
    """The crop generator of one step: depends on (epoch seed, step) only."""
    return torch.Generator().manual_seed((seed * 6_700_417 + (step + 1) * 2_147_483_647) % (2**63 - 1))


class StepBatches(torch.utils.data.Dataset[tuple[Tensor, Tensor]]):
    """A map-style dataset whose item k is batch k, decoded in whichever process asks: what
    `stream_steps` runs through DataLoader workers (`StreamBatches`, `clean.CleanBatches`)."""

    def __len__(self) -> int:
        raise NotImplementedError


class StreamBatches(StepBatches):
    """Item `step`: (uint8 (n_views * B, 3, S, S) views, view-major as memory mode; int64 (B,) labels)."""

    def __init__(
        self,
        index: ImageIndex,
        order: Tensor,
        seed: int,
        image_size: int,
        n_views: int,
        scale: tuple[float, float],
        ratio: tuple[float, float],
    ) -> None:
        self.index, self.order, self.seed = index, order, seed
        self.size, self.n_views, self.scale, self.ratio = image_size, n_views, scale, ratio

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, step: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        ids = self.order[step].tolist()
        u = torch.rand(self.n_views, len(ids), 2 * CROP_TRIES + 2, generator=step_generator(self.seed, step))
        out = torch.empty(self.n_views, len(ids), self.size, self.size, 3, dtype=torch.uint8)
        for j, i in enumerate(ids):
            image = self.index.open(i)
            width, height = image.size
            for v in range(self.n_views):
                row = u[v, j : j + 1]
                top, left, h, w = sample_crop_boxes(
                    row[:, :CROP_TRIES],
                    row[:, CROP_TRIES : 2 * CROP_TRIES],
                    row[:, -2],
                    row[:, -1],
                    height,
                    width,
                    self.scale,
                    self.ratio,
                )[0].tolist()
                crop = image.crop((left, top, left + w, top + h))
                crop = crop.resize((self.size, self.size), Image.Resampling.BILINEAR)
                out[v, j] = torch.from_numpy(np.array(crop))
        views = out.view(-1, self.size, self.size, 3).permute(0, 3, 1, 2).contiguous()
        return views, self.index.labels[ids]


def _single_thread(_: int) -> None:
    torch.set_num_threads(1)  # workers decode; torch threads would only fight over the cores


class WorkerError:
    """A UsageError met in a DataLoader worker, handed back as an item: the main process raises it as it
    was (re-raised by torch it would carry the worker's traceback in its message)."""

    def __init__(self, message: str) -> None:
        self.message = message


class ReportingBatches(StepBatches):
    """`dataset`, with a UsageError returned as a `WorkerError` item instead of raised in the worker."""

    def __init__(self, dataset: StepBatches) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, step: int) -> tuple[Tensor, Tensor]:
        try:
            return self.dataset[step]
        except UsageError as error:
            return WorkerError(str(error))  # type: ignore[return-value]  # checked in stream_steps


def stream_steps(dataset: StepBatches, start_step: int, workers: int, pin: bool) -> Iterator[tuple[Tensor, Tensor]]:
    """The dataset's steps from start_step on, decoded by `workers` processes (0: in this one), in order."""
    steps = range(start_step, len(dataset))
    if workers == 0:
        yield from (dataset[s] for s in steps)
        return
    loader = torch.utils.data.DataLoader(
        ReportingBatches(dataset),
        batch_size=None,
        sampler=steps,
        num_workers=workers,
        pin_memory=pin,
        worker_init_fn=_single_thread,
        prefetch_factor=max(2, math.ceil(4 / workers)),
    )
    for item in loader:
        if isinstance(item, WorkerError):
            raise UsageError(item.message)
        yield item
