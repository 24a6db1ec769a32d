"""The data set registry: one record per named data set, holding every fact mim uses about it.

Config validation (which names `data.dataset` takes), feature extraction (how probe images are
normalised, at what size, what is downloaded), the report (column order, display names) and the plots
(chance lines) all read these records, so a data set registered once is known everywhere. Like the
method registry, it lives in the config package and is filled from above: the built-in records are
written beside their loaders in `mimcli.data.transfer`, imported by name the first time the registry
is read (docs/extending.md, "A probe data set").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Task = Literal["classification", "regression"]
# (root, image_size, download) -> (train, test) ImageData (typed Any here: the image type sits in a later layer)
Loader = Callable[[Path, int, bool, Any], tuple[Any, Any]]  # (root, size, download, fit) -> (train, test)
Statistics = tuple[tuple[float, float, float], tuple[float, float, float]]  # per-channel (mean, std), [0, 1] units

BUILTIN_DATASETS = "mimcli.data.transfer"  # the module that registers the built-in records when imported
# data.dataset values that are families rather than one registered set: any image folder, the generated shapes
PRETRAIN_FAMILIES = ("imagefolder", "shapes")


@dataclass(frozen=True)
class DataSetRecord:
    """What mim knows about one data set, by the name a config or probe.json uses for it."""

    name: str  # as written in probe.datasets and probe.json ("cifar10", "shapes:hue")
    display: str  # as tables and figures name it, as the field does ("Fashion-MNIST")
    task: Task
    classes: int | None = None  # classification: the number of classes (the chance line is 100 / classes %)
    loader: Loader | None = None  # None: bound by `resolve_dataset` itself (the generated shapes tasks)
    statistics: Statistics | None = None  # the official per-data-set normalisation constants, where there are some
    training_norm: bool = False  # probed with the pretraining Normalize(0.5, 0.5) instead (CIFAR, shapes)
    pretrain: bool = False  # also a `data.dataset` a run can pretrain on
    native_size: int | None = None  # probed at this side when it is the run's own pretraining set (STL-10: 96)
    download: tuple[str, int] | None = None  # (folder it fills under data.root, archive size in MB)
    source: str | None = None  # its images' name in the feature cache when records share them ("shapes")

    @property
    def chance(self) -> float | None:
        """Accuracy (%) of guessing the most likely class of a balanced set: 100 / classes."""
        return 100.0 / self.classes if self.task == "classification" and self.classes else None


DATASETS: dict[str, DataSetRecord] = {}  # name -> record, in registration order (the report's column order)
_builtins_loaded = False


def register_dataset(record: DataSetRecord) -> DataSetRecord:
    """Add (or replace) a record; every table, figure and check that reads the registry then knows it."""
    DATASETS[record.name] = record
    return record


def dataset_records() -> dict[str, DataSetRecord]:
    """Every registered data set, the built-ins first."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        importlib.import_module(BUILTIN_DATASETS)
    return DATASETS


def dataset_record(name: str) -> DataSetRecord | None:
    return dataset_records().get(name)


def source_record(source: str) -> DataSetRecord | None:
    """The record of the images a feature cache names `source`: a record's own name, or a shared source
    and its variant ("shapes-20000-5000-s0": the sizes and seed of the shapes every shapes:* task reads)."""
    for record in dataset_records().values():
        if source == (record.source or record.name) or (record.source and source.startswith(f"{record.source}-")):
            return record
    return None


def display_name(name: str) -> str:
    """How tables and figures name a data set id (a probe name or a run's data.dataset), as the field does:
    `fashionmnist` -> Fashion-MNIST; unregistered ones (image folders) as written."""
    record = dataset_record(name)
    return record.display if record else name


def pretraining_names() -> list[str]:
    """The values `data.dataset` accepts: registered sets marked `pretrain`, then the families."""
    return [name for name, record in dataset_records().items() if record.pretrain] + list(PRETRAIN_FAMILIES)
