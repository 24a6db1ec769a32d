"""Probe data sets: a registry name -> (train, test) `ImageData` at the probe resolution.

Every entry declares its task (classification or regression) and the folder layout it expects.
Images come back clean (no augmentation), RGB, resized (antialiased bilinear) to a square at the
pretraining resolution, so the feature extractor never sees PIL images or odd sizes: squashed by default
(eval_lr.py's Resize((size, size))), or with `fit="centre_crop"` the shorter side resized and the centre
square kept (eval_lr_imagenet.py's Resize(256), before its CenterCrop).

Names: cifar10, cifar100, stl10, dtd, mnist, fashionmnist, cub200, flowers102, gtsrb,
`imagefolder:PATH` (PATH/train and PATH/test class trees, or ImageNet's val/ as `stream.index_split`
reads it, or a pack from `mim pack`; `files` lets the feature cache stream them), `colourstats:PATH` (the same images; a
regression onto each image's mean colour and saturation, non-shared by construction) and `shapes:shape`, `shapes:hue`,
`shapes:position` (generated; position is a regression target). torchvision data sets are
downloaded on first use when the run allows it; anything that is neither on disk nor downloadable
raises `DataNotFoundError` naming the folder and how to fill it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch

from mimcli.config import ShapesSection
from mimcli.config.datasets import DataSetRecord, Task, dataset_record, dataset_records, register_dataset
from mimcli.config.datasets import display_name as display_name  # re-exported: what the report imports
from mimcli.data.clean import decode_index, folder_indexes
from mimcli.data.datasets import (
    _missing,
    centre_square_uint8,
    load_split,
    resize_uint8,
    to_rgb,
)
from mimcli.data.images import ImageData
from mimcli.data.shapes import N_HUES, SHAPE_NAMES
from mimcli.data.shapes import TASKS as SHAPES_TASKS
from mimcli.data.stream import ImageIndex
from mimcli.errors import DataNotFoundError, UsageError

Fit = Literal["squash", "centre_crop"]  # how a non-square image becomes image_size x image_size
Loader = Callable[[Path, int, bool, Fit], tuple[ImageData, ImageData]]  # (root, size, download, fit) -> (train, test)

SHAPES_CLASSES = {"shape": len(SHAPE_NAMES), "hue": N_HUES}  # the classification factors of the shapes
SPLIT_SEED = 42  # Flowers102 and GTSRB: per-class random 80/20 split (docs/reference.md#transfer-data-sets)
CUB_URL = "https://data.caltech.edu/records/65de6-vtw72/files/CUB_200_2011.tgz"
CUB_MD5 = "97eceeb196236b17998738112f37df78"


@dataclass(frozen=True)
class TransferDataset:
    """A probe data set bound to its files and resolution; `load()` reads the images (only on a cache miss)."""

    name: str  # as written in probe.json
    task: Task
    source: str  # file-name-safe key of the images (the shapes:* tasks share one set of images)
    target: str | None  # key in ImageData.targets holding the probe target; None: ImageData.labels
    image_size: int
    loader: Callable[[], tuple[ImageData, ImageData]]
    # image folders and packs: (train, test) file indexes, so the feature cache can extract them batch by batch
    files: Callable[[], tuple[ImageIndex, ImageIndex]] | None = None
    fit: Fit = "squash"

    def load(self) -> tuple[ImageData, ImageData]:
        train, test = self.loader()
        return _finish(train, self.image_size, self.fit), _finish(test, self.image_size, self.fit)


def fit_uint8(images: torch.Tensor, size: int, fit: Fit) -> torch.Tensor:
    """A uint8 batch of one shape as size x size: squashed, or Resize(size) + CenterCrop(size)."""
    return centre_square_uint8(images, size) if fit == "centre_crop" else resize_uint8(images, size)


def _finish(data: ImageData, size: int, fit: Fit) -> ImageData:
    data.images = fit_uint8(to_rgb(data.images), size, fit)
    return data


# --------------------------------------------------------------------------------------------- helpers


def concat(parts: Sequence[ImageData]) -> ImageData:
    """Several splits of one data set as one (same classes, same target keys)."""
    keys = parts[0].targets.keys()
    return ImageData(
        torch.cat([p.images for p in parts]),
        torch.cat([p.labels for p in parts]),
        parts[0].classes,
        {k: torch.cat([p.targets[k] for p in parts]) for k in keys},
    )


def per_class_split(
    labels: torch.Tensor | Sequence[int], train_fraction: float = 0.8, seed: int = SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train index, test index), ascending: the official per-class split of vgg_flower.py L27-L54 and
    traffic_sign.py L29-L50. Classes in the order they first appear in `labels` (the official
    defaultdict's insertion order: file order for Flowers, class 0..42 for GTSRB); one
    np.random.RandomState(seed) shuffles np.arange(n) of each class in turn; the first int(0.8 n)
    (rounded down) go to train."""
    import numpy as np

    rng = np.random.RandomState(seed)
    groups: dict[int, list[int]] = {}
    for position, label in enumerate(torch.as_tensor(labels).tolist()):
        groups.setdefault(label, []).append(position)
    train: list[int] = []
    test: list[int] = []
    for members in groups.values():
        order = np.arange(len(members))
        rng.shuffle(order)
        shuffled = [members[i] for i in order.tolist()]
        cut = int(train_fraction * len(members))
        train += shuffled[:cut]
        test += shuffled[cut:]
    return torch.tensor(sorted(train), dtype=torch.long), torch.tensor(sorted(test), dtype=torch.long)


def decode_samples(
    samples: Sequence[tuple[Any, int]] | Any, classes: list[str], image_size: int, fit: Fit = "squash"
) -> ImageData:
    """Decode (PIL image, label) pairs (a torchvision data set or a list) into uint8 tensors at image_size."""
    from torchvision.transforms.functional import pil_to_tensor

    n = len(samples)
    images = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.long)
    for i in range(n):
        image, label = samples[i]
        images[i] = fit_uint8(pil_to_tensor(image.convert("RGB")).unsqueeze(0), image_size, fit)[0]
        labels[i] = int(label)
    return ImageData(images, labels, classes)


def _torchvision(name: str, root: Path, hint: str, factory: Callable[[], Any]) -> Any:
    try:
        return factory()
    except Exception as error:  # RuntimeError (not found), URLError / OSError (no network), ImportError (scipy)
        raise _missing(name, root, error, hint) from None


def _download_hint(folder: str) -> str:
    return f"download it with network access, or pass --data-root to a folder holding {folder}"


# --------------------------------------------------------------------------------------------- loaders


def _pretraining_split(name: str) -> Loader:
    def load(root: Path, size: int, download: bool, fit: Fit) -> tuple[ImageData, ImageData]:  # square images
        return (load_split(name, root, "train", size, download), load_split(name, root, "test", size, download))

    return load


def _load_mnist(name: str) -> Loader:
    def load(root: Path, size: int, download: bool, fit: Fit) -> tuple[ImageData, ImageData]:  # 28 x 28
        from torchvision import datasets

        cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
        folder = cls.__name__
        out = []
        for train in (True, False):
            ds = _torchvision(
                name, root, _download_hint(f"{folder}/raw"), partial(cls, str(root), train=train, download=download)
            )
            out.append(ImageData(to_rgb(ds.data), ds.targets.long(), list(ds.classes)))
        return out[0], out[1]

    return load


def _load_dtd(root: Path, size: int, download: bool, fit: Fit) -> tuple[ImageData, ImageData]:
    """DTD partition 1: train + val for training, test for testing."""
    from torchvision import datasets

    splits = {}
    for split in ("train", "val", "test"):
        ds = _torchvision(
            "dtd",
            root,
            _download_hint("dtd/dtd/{images,labels}"),
            partial(datasets.DTD, str(root), split=split, partition=1, download=download),
        )
        splits[split] = decode_samples(ds, list(ds.classes), size, fit)
    return concat([splits["train"], splits["val"]]), splits["test"]


def _load_flowers102(root: Path, size: int, download: bool, fit: Fit) -> tuple[ImageData, ImageData]:
    """All 8,189 images of the official train/val/test files in image-number order (the order of
    imagelabels.mat, which the official VGGFlower enumerates), re-split 80/20 per class (seed 42)."""
    from torchvision import datasets

    items: list[tuple[Path, int]] = []
    classes: list[str] = []
    for split in ("train", "val", "test"):
        ds = _torchvision(
            "flowers102",
            root,
            _download_hint("flowers-102/{jpg,imagelabels.mat,setid.mat}"),
            partial(datasets.Flowers102, str(root), split=split, download=download),
        )
        items += [(Path(path), int(label)) for path, label in zip(ds._image_files, ds._labels)]
        classes = list(ds.classes)
    items.sort(key=lambda item: item[0].name)  # image_00001.jpg, image_00002.jpg, ...
    data = decode_samples(_ImageFiles(items), classes, size, fit)
    train, test = per_class_split(data.labels)
    return data.select(train), data.select(test)


def _load_gtsrb(root: Path, size: int, download: bool, fit: Fit) -> tuple[ImageData, ImageData]:
    """GTSRB Final_Training images (torchvision's train split), re-split 80/20 per class (seed 42), classes
    0..42 in turn as traffic_sign.py L33. Within a class the files are taken in name order: the official
    `glob()` (L35, unsorted) lists them in the order the file system returns, which differs between file
    systems and was not recorded, so which files fill the official split's positions cannot be recovered."""
    from torchvision import datasets

    ds = _torchvision(
        "gtsrb",
        root,
        _download_hint("gtsrb/GTSRB/Training/<class>/*.ppm"),
        lambda: datasets.GTSRB(str(root), split="train", download=download),
    )
    items = sorted(((Path(path), int(label)) for path, label in ds._samples), key=lambda item: (item[1], item[0].name))
    data = decode_samples(_ImageFiles(items), [f"{i:05d}" for i in range(43)], size, fit)
    train, test = per_class_split(data.labels)
    return data.select(train), data.select(test)


class _ImageFiles:
    """[(path, label)] read as (PIL image, label) one at a time, so only one file is open at once."""

    def __init__(self, items: list[tuple[Path, int]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.items[index]
        with Image.open(path) as image:
            return image.convert("RGB"), label


def _cub_folder(root: Path, download: bool) -> Path:
    for folder in (root / "CUB_200_2011", root):
        if (folder / "images.txt").is_file():
            return folder
    hint = (
        f"put the official archive's CUB_200_2011/{{images.txt,image_class_labels.txt,"
        f"train_test_split.txt,images/}} under {root} (archive: {CUB_URL})"
    )
    if not download:
        raise DataNotFoundError(f"cub200 not found under {root}; {hint}")
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(CUB_URL, str(root), filename="CUB_200_2011.tgz", md5=CUB_MD5)
    except Exception as error:
        raise _missing("cub200", root, error, hint) from None
    return _cub_folder(root, download=False)


def _load_cub200(root: Path, size: int, download: bool, fit: Fit) -> tuple[ImageData, ImageData]:
    """CUB-200-2011 with its official train/test split (train_test_split.txt: 1 = train)."""
    folder = _cub_folder(root, download)

    def table(name: str) -> dict[str, str]:
        path = folder / name
        if not path.is_file():
            raise DataNotFoundError(f"cub200: {path} is missing; expected the official CUB_200_2011 layout")
        return dict(line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())

    paths, labels, is_train = table("images.txt"), table("image_class_labels.txt"), table("train_test_split.txt")
    classes_file = folder / "classes.txt"
    n_classes = max(int(v) for v in labels.values())
    classes = (
        [name for _, name in sorted((int(k), v) for k, v in table("classes.txt").items())]
        if classes_file.is_file()
        else [str(i) for i in range(1, n_classes + 1)]
    )
    splits: dict[bool, list[tuple[Path, int]]] = {True: [], False: []}
    for image_id, rel in sorted(paths.items(), key=lambda item: int(item[0])):
        splits[is_train[image_id].strip() == "1"].append((folder / "images" / rel.strip(), int(labels[image_id]) - 1))

    def decode(items: list[tuple[Path, int]]) -> ImageData:
        try:
            return decode_samples(_ImageFiles(items), classes, size, fit)
        except OSError as error:
            raise DataNotFoundError(f"cub200: cannot read an image under {folder / 'images'}: {error}") from None

    return decode(splits[True]), decode(splits[False])


# The built-in probe data sets, in the report's column order. Official statistics: data_statistics.py of the
# official code (identical in its SimCLR, BYOL, BarTwins, Supervised folders); CIFAR and the generated shapes
# are probed with the (0.5, 0.5) their models were pretrained with. Downloads: the folder torchvision (or the
# CUB archive) fills under data.root and the archives' size in MB, rounded (torchvision's URLs:
# cifar-10-python.tar.gz 163, cifar-100-python.tar.gz 161, stl10_binary.tar.gz 2,640, dtd-r1.0.1.tar.gz 625,
# MNIST 4 files 12, Fashion-MNIST 4 files 30, CUB_200_2011.tgz 1,150, 102flowers.tgz + labels 345, GTSRB
# training + test archives 280). STL-10 models are probed on STL-10 itself at 96 px, as the official code.
_R = DataSetRecord  # short, so that each record below fits on two lines
# fmt: off
for _record in (
    _R("cifar10", "CIFAR-10", "classification", 10, _pretraining_split("cifar10"), training_norm=True,
      pretrain=True, download=("cifar-10-batches-py", 163)),
    _R("cifar100", "CIFAR-100", "classification", 100, _pretraining_split("cifar100"), training_norm=True,
      pretrain=True, download=("cifar-100-python", 161)),
    _R("stl10", "STL-10", "classification", 10, _pretraining_split("stl10"),
      ((0.491, 0.482, 0.447), (0.247, 0.244, 0.262)), pretrain=True, native_size=96, download=("stl10_binary", 2640)),
    _R("dtd", "DTD", "classification", 47, _load_dtd,
      ((0.533, 0.474, 0.426), (0.261, 0.250, 0.259)), download=("dtd", 625)),
    _R("mnist", "MNIST", "classification", 10, _load_mnist("mnist"),
      ((0.170, 0.170, 0.170), (0.320, 0.320, 0.320)), download=("MNIST", 12)),
    _R("fashionmnist", "Fashion-MNIST", "classification", 10, _load_mnist("fashionmnist"),
      ((0.348, 0.348, 0.348), (0.347, 0.347, 0.347)), download=("FashionMNIST", 30)),
    _R("cub200", "CUB-200-2011", "classification", 200, _load_cub200,
      ((0.483, 0.491, 0.424), (0.228, 0.224, 0.259)), download=("CUB_200_2011", 1150)),
    _R("flowers102", "Oxford Flowers-102", "classification", 102, _load_flowers102,
      ((0.518, 0.410, 0.329), (0.296, 0.249, 0.285)), download=("flowers-102", 345)),
    _R("gtsrb", "GTSRB", "classification", 43, _load_gtsrb,
      ((0.335, 0.291, 0.295), (0.267, 0.249, 0.251)), download=("gtsrb", 280)),
    # the generated shapes (data.shapes; docs/shapes.md): one image set, a target per factor
    *(
        DataSetRecord(f"shapes:{factor}", f"shapes:{factor}", task, SHAPES_CLASSES.get(factor),
                      training_norm=True, source="shapes")
        for factor, task in SHAPES_TASKS.items()
    ),
):
    register_dataset(_record)
# fmt: on


def pending_downloads(names: Sequence[str], root: str | Path) -> list[tuple[str, int]]:
    """(name, MB) of each probe data set in `names` whose folder is not under `root` yet: what probing them
    will download first (shapes, image folders and packs download nothing)."""
    root = Path(root)
    pending = []
    for name in dict.fromkeys(name.lower() for name in names):
        record = dataset_record(name)
        if record is not None and record.download is not None:
            folder, megabytes = record.download
            if not (root / folder).exists():
                pending.append((name, megabytes))
    return pending


def describe_downloads(pending: Sequence[tuple[str, int]], root: str | Path) -> str:
    """One line: which data sets will be downloaded into `root`, and how much."""
    total = sum(megabytes for _, megabytes in pending)
    listed = ", ".join(f"{name} (about {megabytes:,} MB)" for name, megabytes in pending)
    return f"probing will first download {listed} into {root}: about {total / 1000:.1f} GB in all"


COLOUR_TARGET = "colour"


def known_names() -> list[str]:
    """The probe names `resolve_dataset` takes: the registered sets and the folder families."""
    return [*dataset_records(), "imagefolder:PATH", "colourstats:PATH"]


def colour_statistics(images: torch.Tensor) -> torch.Tensor:
    """Per image: mean R, G, B and mean HSV saturation (max - min over channels), float (n, 4) in [0, 1].

    The default augmentations change these (colour jitter, grey scale) independently in each view, so
    they are non-shared information by construction, like the hue of a `shapes` glyph.
    """
    x = images.float() / 255
    saturation = x.amax(1) - x.amin(1)
    return torch.cat([x.mean((2, 3)), saturation.mean((1, 2)).unsqueeze(1)], dim=1)


def with_colour_statistics(data: ImageData) -> ImageData:
    data.targets = {**data.targets, COLOUR_TARGET: colour_statistics(data.images)}
    return data


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "data"


def resolve_dataset(
    name: str,
    *,
    root: str | Path,
    image_size: int,
    download: bool = True,
    shapes: ShapesSection | None = None,
    pretrain_dataset: str | None = None,
    fit: Fit = "squash",
) -> TransferDataset:
    """Bind a probe data set name to its files and resolution (nothing is read until `.load()`).

    `shapes` is the run's data.shapes section (None: its defaults). `pretrain_dataset` is the
    run's data.dataset: the pretraining set itself is probed at its native size (STL-10: 96 px). `fit`: how
    the registry's non-square images (DTD, Flowers102, GTSRB, CUB-200) become square; image folders are
    decoded as training decodes them (squashed), generated shapes are square.
    """
    root = Path(root)
    kind, sep, arg = name.partition(":")
    kind = kind.lower()
    if kind in ("imagefolder", "colourstats") and sep:
        if fit != "squash":
            raise UsageError(f"{name}: image folders are decoded squashed, as training decodes them (got fit {fit!r})")
        folder = Path(arg).expanduser()
        digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]
        source = f"{kind}-{_safe(folder.name)}-{digest}"  # own cache: cached features carry their targets

        def files() -> tuple[ImageIndex, ImageIndex]:
            return folder_indexes(str(folder))

        def load_folder() -> tuple[ImageData, ImageData]:
            train, test = files()
            return decode_index(train, image_size), decode_index(test, image_size)

        if kind == "colourstats":

            def load_colour() -> tuple[ImageData, ImageData]:
                train, test = load_folder()
                return with_colour_statistics(train), with_colour_statistics(test)

            return TransferDataset(f"colourstats:{arg}", "regression", source, COLOUR_TARGET, image_size, load_colour)
        return TransferDataset(f"imagefolder:{arg}", "classification", source, None, image_size, load_folder, files)
    if kind == "shapes" and sep:
        record = dataset_record(f"shapes:{arg}")
        if record is None:
            tasks = [name.partition(":")[2] for name in dataset_records() if name.startswith("shapes:")]
            raise UsageError(f"unknown shapes task {arg!r}; choose one of {', '.join(tasks)}")
        shapes = shapes or ShapesSection()
        if arg == "position" and shapes.layout == "centred":
            raise UsageError("shapes:position needs data.shapes.layout = 'scattered': centred glyphs have one position")
        # the defaults (textured, scattered) keep their old cache name
        variant = ("" if shapes.background == "textured" else f"-{shapes.background}") + (
            "" if shapes.layout == "scattered" else f"-{shapes.layout}"
        )

        def load_shapes() -> tuple[ImageData, ImageData]:
            return (
                load_split("shapes", root, "train", image_size, shapes=shapes),
                load_split("shapes", root, "test", image_size, shapes=shapes),
            )

        return TransferDataset(
            f"shapes:{arg}",
            record.task,
            f"{record.source}-{shapes.n_train}-{shapes.n_test}-s{shapes.seed}{variant}",
            arg,
            image_size,
            load_shapes,
            fit=fit,  # square images: both fits give the same pixels
        )
    found = None if sep else dataset_record(kind)
    if found is None or found.loader is None:
        raise UsageError(f"unknown probe dataset {name!r}; choose from {', '.join(known_names())}")
    loader = found.loader
    size = (found.native_size or image_size) if kind == pretrain_dataset else image_size
    return TransferDataset(kind, found.task, kind, None, size, lambda: loader(root, size, download, fit), fit=fit)
