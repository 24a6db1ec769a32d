"""Data sets as whole uint8 tensors: read once, then everything (augmentation included) is tensor math.

Pretraining sets: cifar10, cifar100, stl10 (unlabeled, as the official code; optionally + train), imagefolder,
shapes. Each loader returns an `ImageData` at the requested side length, so the training loop and the probes never
see PIL images.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

import torch
from torch import Tensor
from torch.nn import functional as F

from mimcli.config import ShapesSection
from mimcli.data.images import ImageData
from mimcli.data.shapes import generate_shapes
from mimcli.errors import DataNotFoundError, UsageError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Resize a uint8 batch to size x size (antialiased bilinear), in chunks to bound memory."""
    return _resize_uint8(images, size, size)


def _resize_uint8(images: Tensor, height: int, width: int) -> Tensor:
    if images.shape[-2] == height and images.shape[-1] == width:
        return images
    out = []
    for chunk in torch.split(images, 1024):
        resized = F.interpolate(
            chunk.float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(resized.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def centre_square_uint8(images: Tensor, size: int) -> Tensor:
    """torchvision's Resize(size) + CenterCrop(size) on a uint8 batch of one shape: the shorter side to size,
    the longer to int(size * long / short) (`_compute_resized_output_size`), then the centre size x size,
    offset int(round((side - size) / 2)) (`center_crop`). The aspect ratio is kept where `resize_uint8`
    squashes; a square batch gives exactly what `resize_uint8` gives."""
    height, width = images.shape[-2:]
    if height == width:
        return resize_uint8(images, size)
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    new_height, new_width = (new_long, size) if height > width else (size, new_long)
    resized = _resize_uint8(images, new_height, new_width)
    top, left = round((new_height - size) / 2.0), round((new_width - size) / 2.0)  # half to even, as torchvision
    return resized[..., top : top + size, left : left + size].contiguous()


def to_rgb(images: Tensor) -> Tensor:
    """(N, H, W) or (N, 1, H, W) grey -> (N, 3, H, W)."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1).contiguous()
    return images


class Selectable(Protocol):
    def __len__(self) -> int: ...
    def select(self, index: Tensor) -> Self: ...


S = TypeVar("S", bound=Selectable)


def seeded_subset(data: S, n: int | None, seed: int) -> S:
    """A fixed subset of n items (the same for the same seed), or everything (decoded images or a file index)."""
    if n is None or n >= len(data):
        return data
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data), generator=generator)[:n].sort().values
    return data.select(index)


def _missing(name: str, root: Path, error: Exception, hint: str) -> DataNotFoundError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return DataNotFoundError(f"{name} not found under {root} and could not be downloaded ({reason}); {hint}")


def load_cifar(name: str, root: Path, train: bool, download: bool) -> ImageData:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        ds = cls(str(root), train=train, download=download)
    except Exception as error:  # torchvision raises RuntimeError / URLError / OSError
        raise _missing(
            name,
            root,
            error,
            f"download it with network access, or set data.root to a folder "
            f"holding {'cifar-10-batches-py' if name == 'cifar10' else 'cifar-100-python'}",
        ) from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageData(images, torch.as_tensor(ds.targets, dtype=torch.long), list(ds.classes))


def load_stl10(root: Path, split: str, download: bool) -> ImageData:
    from torchvision import datasets

    try:
        ds = datasets.STL10(str(root), split=split, download=download)
    except Exception as error:
        raise _missing(
            "stl10", root, error, "download it with network access, or set data.root to a folder holding stl10_binary"
        ) from None
    labels = torch.as_tensor(ds.labels, dtype=torch.long)
    return ImageData(torch.from_numpy(ds.data).contiguous(), labels, list(ds.classes))


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def image_folder_split(root: Path, split: str) -> Path:
    """`root/train` (or `root/test`); a root holding class folders, or images directly (unlabeled, for
    pretraining only), counts as its train split."""
    if root.is_file():  # a pack (`mim pack`) is read image by image, never decoded whole
        raise UsageError(f"{root} is a file: read a pack (`mim pack`) in stream mode (data.loader='stream' or 'auto')")
    if (root / split).is_dir():
        return root / split
    if split == "train" and root.is_dir() and any(p.is_dir() or is_image(p) for p in root.iterdir()):
        return root
    raise DataNotFoundError(
        f"image folder {root / split} not found: expected {root}/{split}/<class>/*.jpg|png "
        f"(or, for pretraining, images directly in {root})"
    )


def list_image_folder(folder: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(image path, label) pairs and the class names of `folder/<class>/**/<image>`, sorted; a folder with no
    class folders but images directly in it is unlabeled (label -1). Memory and stream mode both list with it."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files: list[tuple[Path, int]] = []
    for index, name in enumerate(classes):
        files += [(p, index) for p in sorted((folder / name).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not classes:
        files = [(p, -1) for p in sorted(folder.iterdir()) if is_image(p)]
    if not files:
        raise DataNotFoundError(
            f"no images found in {folder}: expected {folder}/<class>/*.jpg|png or images directly in {folder}"
        )
    return files, classes


def square_uint8(image: PILImage, image_size: int) -> Tensor:
    """An RGB PIL image as uint8 (3, S, S), squashed to a square by `resize_uint8`: the one decode that
    memory-mode folders and streamed probe features (clean.py) share, so both give the same pixels."""
    import numpy as np

    return resize_uint8(torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0), image_size)[0]


def load_image_folder(folder: Path, image_size: int) -> ImageData:
    """Decode every image of a `<class>/<image>` tree (once, with PIL), resized to image_size x image_size.

    A folder with no class folders but images directly in it is unlabeled (labels -1): what
    self-supervised pretraining needs, as lightly accepts; a method that needs labels refuses it.
    """
    from mimcli.data.index import open_rgb

    files, classes = list_image_folder(folder)
    images = torch.empty(len(files), 3, image_size, image_size, dtype=torch.uint8)
    for i, (path, _) in enumerate(files):
        images[i] = square_uint8(open_rgb(str(path)), image_size)
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    return ImageData(images, labels, classes)


def load_split(
    name: str,
    root: str | Path,
    split: str,
    image_size: int,
    download: bool = True,
    shapes: ShapesSection | None = None,
) -> ImageData:
    """One split ('train' | 'test' | 'unlabeled' | 'pretrain') of a pretraining data set at image_size.
    `shapes`: the run's data.shapes section (sizes, seed, background, layout); None: its defaults."""
    root = Path(root)
    if name in ("cifar10", "cifar100"):
        data = load_cifar(name, root, split != "test", download)
    elif name == "stl10":
        if split == "pretrain":
            unlabeled = load_stl10(root, "unlabeled", download)
            train = load_stl10(root, "train", download)
            data = ImageData(
                torch.cat([unlabeled.images, train.images]), torch.cat([unlabeled.labels, train.labels]), train.classes
            )
        else:
            data = load_stl10(root, split, download)
    elif name == "imagefolder":
        folder = image_folder_split(root, "test" if split == "test" else "train")
        return load_image_folder(folder, image_size)
    elif name == "shapes":
        shapes = shapes or ShapesSection()
        data = generate_shapes(
            shapes.n_test if split == "test" else shapes.n_train,
            seed=shapes.seed + (1 if split == "test" else 0),
            image_size=32,
            background=shapes.background,
            layout=shapes.layout,
        )
    else:
        raise UsageError(f"unknown dataset {name!r}")
    data.images = resize_uint8(data.images, image_size)
    return data


def load_pretrain_data(
    dataset: str,
    root: str,
    image_size: int,
    subset: int | None,
    seed: int,
    download: bool,
    shapes: ShapesSection | None = None,
    stl10_split: str = "unlabeled",
) -> ImageData:
    """The images a pretraining run learns from, optionally a seeded subset. STL-10: the unlabeled
    split (100k, as the official code), or with `stl10_split="unlabeled+train"` also the 5k train images.

    Images are stored at their native side (the random-resized crop samples from the full image and
    then resizes to image_size, as torchvision's RandomResizedCrop does).
    """
    split = {"unlabeled": "unlabeled", "unlabeled+train": "pretrain"}[stl10_split] if dataset == "stl10" else "train"
    native = {"cifar10": 32, "cifar100": 32, "stl10": 96, "shapes": 32}.get(dataset, image_size)
    data = load_split(dataset, root, split, max(native, image_size), download, shapes)
    return seeded_subset(data, subset, seed)
