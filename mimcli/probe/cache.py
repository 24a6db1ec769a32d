"""Frozen-backbone features, cached in HDF5 under RUN_DIR/features/ so probes never re-encode images.

One file per (checkpoint sha256, image source, split, resolution) holds all three pooled blocks, the
labels and the extra targets; the full sha256 is checked inside, files are renamed into place and
fletcher32-checksummed, and a bad file is reported and rebuilt. Normalisation is per data set, as
the official eval_lr.py. File layout, keys, normalisation and safety: docs/probing.md (the feature cache).
Image-folder sets too large for memory (ImageNet) are extracted batch by batch from their files and
written row by row into the same checksummed layout (`FeatureCache._stream`, docs/scale.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch
from torch import Tensor, nn

from mimcli import distributed
from mimcli.data.clean import clean_batches
from mimcli.data.h5atomic import atomic_h5
from mimcli.data.images import ImageData
from mimcli.data.stream import ImageIndex, resolve_loader
from mimcli.data.transfer import TransferDataset
from mimcli.errors import UsageError
from mimcli.probe.extract import LAYERS, Features, encode, extract, layer_names
from mimcli.probe.normalization import (
    MODEL_NORM,
    NORM,
    channel_counts,
    norm_kind,
    probe_normalization,
    stats_from_counts,
)
from mimcli.rundir.runs import BACKBONE, file_sha256, load_run_config, tensor_bytes
from mimcli.rundir.weights import load_backbone
from mimcli.train.progress import CountProgress

if TYPE_CHECKING:
    from rich.console import Console

FORMAT = 1
LOG_EVERY = 50  # without a live bar, a progress line every 50 batches (25,600 images at the default 512)
# probe.precision -> the cache attribute naming it; fp32 is the official code's (no autocast anywhere)
PRECISION_ATTR = {"fp32": "fp32", "bf16": "bf16-autocast"}
log = logging.getLogger(__name__)


class FeatureCache:
    """Features of one backbone checkpoint; `get(dataset)` -> (train, test) `Features`, cached on disk.

    `backbone_loader` (default: `weights.load_backbone(run_dir, weights)`) is called at most once, and
    only when some split is not cached yet. An image-folder set (or a pack) is extracted batch by batch
    from its files (`_stream`) when `loader` says so: "stream", or "auto" when its decoded images would
    exceed `memory_gb` GiB; loader, memory_gb and workers default to the run's data.loader,
    data.memory_gb and data.workers (auto, 8 GiB and 0 for a folder holding only a checkpoint).
    """

    def __init__(
        self,
        run_dir: Path,
        weights: str = BACKBONE,
        device: str | torch.device = "auto",
        console: Console | None = None,
        backbone_loader: Callable[[], nn.Module] | None = None,
        batch_size: int = 512,
        normalize: str = "official",
        precision: str = "fp32",
        loader: str | None = None,
        memory_gb: float | None = None,
        workers: int | None = None,
        show_progress: bool = True,
        identity: str | None = None,
        fixed_norm: tuple[list[float], list[float]] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.show_progress = show_progress
        run_loader, run_memory_gb, run_workers = _stream_settings(self.run_dir)
        self.loader = loader or run_loader
        self.memory_gb = run_memory_gb if memory_gb is None else memory_gb
        self.workers = run_workers if workers is None else workers
        self.normalize = normalize
        if precision not in PRECISION_ATTR:
            raise UsageError(f"feature precision {precision!r}: choose one of {', '.join(PRECISION_ATTR)}")
        self.precision = precision
        self.weights = weights
        path = self.run_dir / weights
        if not path.is_file():
            raise UsageError(f"{path} not found: has the run finished?")
        # a foreign model's identity: its weights' hash plus how features are taken (layers, pooling)
        self.sha256 = identity or file_sha256(path)
        self.fixed_norm = fixed_norm
        self.folder = self.run_dir / "features"
        self.device = device if isinstance(device, torch.device) else distributed.resolve_device(device)
        self.console = console
        self.batch_size = batch_size
        self._loader = backbone_loader or (lambda: load_backbone(self.run_dir, weights)[0])
        self._backbone: nn.Module | None = None

    # ------------------------------------------------------------------------------------ naming
    def path(self, source: str, split: str, image_size: int) -> Path:
        tag = "" if self.normalize == "official" or self.fixed_norm else f"-{self.normalize.replace('_', '')}"
        tag += "" if self.precision == "fp32" else f"-{self.precision}"  # fp32 keeps the names of older caches
        return self.folder / f"{source}-{split}-{image_size}px-{self.sha256[:16]}{tag}.h5"

    def key(self, source: str, image_size: int, layers: list[int]) -> str:
        """What a probe record names as its features: checkpoint + source + resolution + layers."""
        return f"{self.sha256[:16]}/{source}/{image_size}px/{'+'.join(layer_names(layers))}"

    # ------------------------------------------------------------------------------------ public
    def get(self, dataset: TransferDataset) -> tuple[Features, Features]:
        splits = ("train", "test")
        found = {s: self._read(self.path(dataset.source, s, dataset.image_size), s) for s in splits}
        if all(found[s] is not None for s in splits):
            return found["train"], found["test"]  # type: ignore[return-value]
        if dataset.files is not None:
            with distributed.main_first():
                indexes = dict(zip(splits, dataset.files()))
            n = sum(len(index) for index in indexes.values())
            if resolve_loader(self.loader, n, dataset.image_size, self.memory_gb) == "stream":
                return self._stream(dataset, indexes, found)
        with distributed.main_first():  # under DDP rank 0 downloads first
            images = dict(zip(splits, dataset.load()))
        mean, std, norm = self._normalization(dataset.source, images["train"].images)
        for split in splits:
            if found[split] is None:
                found[split] = self._build(dataset, split, images[split], mean, std, norm)
        distributed.barrier()  # rank 0's files are on disk before any rank looks for the next data set
        return found["train"], found["test"]  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------ internals
    def _say(self, message: str) -> None:
        if self.console is not None and distributed.is_main():
            self.console.print(message)

    def progress(self, description: str, total: int, unit: str = "batches", every: int | None = None) -> CountProgress:
        """A live bar on a terminal (unless show_progress is off), a line every `every` units in a log;
        rank 0 only."""
        console = self.console if distributed.is_main() else None
        return CountProgress(
            console, description, total, unit, self.show_progress, LOG_EVERY if every is None else every
        )

    def _warn(self, message: str) -> None:
        if self.console is not None:
            self.console.print(f"[yellow]warning:[/yellow] {message}")
        else:
            log.warning(message)

    def _normalization(self, source: str, train_images: Tensor) -> tuple[list[float], list[float], str]:
        """The model's own constants when it has them (a foreign model's), else the per-data-set rule."""
        if self.fixed_norm is not None:
            return list(self.fixed_norm[0]), list(self.fixed_norm[1]), MODEL_NORM
        return probe_normalization(source, train_images, self.normalize)

    def _norm_kind(self, source: str) -> str:
        return MODEL_NORM if self.fixed_norm is not None else norm_kind(source, self.normalize)

    def backbone(self) -> nn.Module:
        if self._backbone is None:
            self._backbone = self._loader().to(self.device).eval()
            if self.device.type == "cuda":
                self._backbone = self._backbone.to(memory_format=torch.channels_last)
        return self._backbone

    def _problem(self, handle: h5py.File, split: str) -> str | None:
        attrs = handle.attrs
        if not attrs.get("complete", False):
            return "incomplete (no 'complete' attribute)"
        if attrs.get("format") != FORMAT:
            return f"of format {attrs.get('format')!r}, not {FORMAT}"
        if attrs.get("checkpoint_sha256") != self.sha256 or attrs.get("split") != split:
            return "for another checkpoint or split"
        expected = self._norm_kind(str(attrs.get("source")))
        if attrs.get("norm") != expected:
            return f"normalised with {attrs.get('norm')!r}, not {expected!r}"
        if attrs.get("precision") != PRECISION_ATTR[self.precision]:  # an untagged file from a bf16 extraction
            return f"extracted in {attrs.get('precision')!r}, not {PRECISION_ATTR[self.precision]!r}"
        absent = [name for name in (*LAYERS, "labels") if name not in handle]
        if absent:
            return f"missing {', '.join(absent)}"
        unchecked = [name for name in (*LAYERS, "labels") if handle[name].size and not handle[name].fletcher32]
        if unchecked:
            return f"written without checksums ({', '.join(unchecked)})"
        n = int(attrs["n"])
        shapes = {name: handle[name].shape for name in (*LAYERS, "labels")}
        shapes.update({f"targets/{k}": v.shape for k, v in handle.get("targets", {}).items()})
        wrong = {name: shape for name, shape in shapes.items() if not shape or shape[0] != n}
        wrong.update({name: shapes[name] for name in LAYERS if len(shapes[name]) != 2})
        return f"of mismatched shapes {wrong} for n={n}" if wrong else None

    def _read(self, path: Path, split: str) -> Features | None:
        if not path.is_file():
            return None
        try:
            with h5py.File(path, "r") as handle:
                problem = self._problem(handle, split)
                if problem is None:
                    return Features(
                        layers={name: torch.from_numpy(handle[name][...]) for name in LAYERS},
                        labels=torch.from_numpy(handle["labels"][...]),
                        targets={k: torch.from_numpy(v[...]) for k, v in handle.get("targets", {}).items()},
                        classes=json.loads(handle.attrs["classes"]),
                        meta={k: _plain(v) for k, v in handle.attrs.items()},
                    )
        except (OSError, KeyError, ValueError, TypeError) as error:
            problem = f"unreadable ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
        self._warn(f"feature cache {path} is {problem}; rebuilding it")
        path.unlink(missing_ok=True)
        return None

    def _build(
        self, dataset: TransferDataset, split: str, data: ImageData, mean: list[float], std: list[float], norm: str
    ) -> Features:
        self._say(
            f"extracting {dataset.name} {split} features: {len(data)} images at {dataset.image_size} px "
            f"on {self.device}"
        )
        batches = math.ceil(len(range(len(data))[distributed.shard(len(data))]) / self.batch_size)
        with self.progress(f"{dataset.name} {split} features", batches) as bar:
            layers = extract(
                self.backbone(), data.images, mean, std, self.device, self.batch_size, self.precision, bar.advance
            )
        meta = self._meta(dataset, split, len(data), data.classes, mean, std, norm)
        features = Features(layers, data.labels.clone(), dict(data.targets), list(data.classes), meta)
        if distributed.is_main():
            self._write(self.path(dataset.source, split, dataset.image_size), features)
        return features

    def _stream(
        self, dataset: TransferDataset, indexes: dict[str, ImageIndex], found: dict[str, Features | None]
    ) -> tuple[Features, Features]:
        """Missing splits extracted batch by batch from the files and written row by row (rank 0; the
        other ranks wait and read the files): memory holds a few batches, never the set."""
        if distributed.is_main():
            kind = self._norm_kind(dataset.source)
            if kind == NORM:  # train-split statistics: one decoding pass over the train images first
                counts = torch.zeros(3, 256, dtype=torch.long)
                batches = math.ceil(len(indexes["train"]) / self.batch_size)
                with self.progress(f"{dataset.name} train statistics", batches) as bar:
                    for images, _ in clean_batches(indexes["train"], dataset.image_size, self.batch_size, self.workers):
                        counts += channel_counts(images)
                        bar.advance()
                mean, std = stats_from_counts(counts)
            else:
                mean, std, kind = self._normalization(dataset.source, torch.empty(0))
            for split, index in indexes.items():
                if found[split] is None:
                    self._stream_split(dataset, split, index, mean, std, kind)
        distributed.barrier()
        out = {
            split: self._read(self.path(dataset.source, split, dataset.image_size), split)
            if found[split] is None
            else found[split]
            for split in indexes
        }
        train, test = out["train"], out["test"]
        if train is None or test is None:
            raise UsageError(f"streamed features of {dataset.name} could not be read back from {self.folder}")
        return train, test

    def _stream_split(
        self, dataset: TransferDataset, split: str, index: ImageIndex, mean: list[float], std: list[float], norm: str
    ) -> None:
        """One split's cache file, filled batch by batch into preallocated checksummed datasets (chunks of
        one batch of rows), in a temporary file renamed when complete (h5atomic.atomic_h5)."""
        n = len(index)
        self._say(
            f"extracting {dataset.name} {split} features: {n} images at {dataset.image_size} px "
            f"on {self.device}, streamed from the files"
        )
        dims = getattr(self.backbone(), "feature_dims", {})  # PooledResNet's channels per layer
        needed = n * (8 + 4 * sum(dims.get(name, 0) for name in LAYERS))
        with (
            contextlib.ExitStack() as stack,
            atomic_h5(self.path(dataset.source, split, dataset.image_size), needed) as handle,
        ):
            _checksummed(handle, "labels", index.labels)
            handle.create_group("targets")
            row = 0
            pin = self.device.type == "cuda"
            bar = stack.enter_context(self.progress(f"{dataset.name} {split} features", math.ceil(n / self.batch_size)))
            for images, _ in clean_batches(index, dataset.image_size, self.batch_size, self.workers, pin):
                pooled = encode(self.backbone(), images, mean, std, self.device, self.precision)
                for name, values in pooled.items():
                    if name not in handle:
                        chunks = (min(n, self.batch_size), values.shape[1])
                        handle.create_dataset(
                            name, shape=(n, values.shape[1]), dtype=np.float32, chunks=chunks, fletcher32=True
                        )
                    handle[name][row : row + len(values)] = values.cpu().numpy()
                row += len(images)
                bar.advance()
            for name, value in self._meta(dataset, split, n, index.classes, mean, std, norm).items():
                handle.attrs[name] = value

    def _meta(
        self,
        dataset: TransferDataset,
        split: str,
        n: int,
        classes: list[str],
        mean: list[float],
        std: list[float],
        norm: str,
    ) -> dict[str, Any]:
        """The attributes of a cache file (docs/probing.md)."""
        return {
            "format": FORMAT,
            "checkpoint_sha256": self.sha256,
            "checkpoint": self.weights,
            "source": dataset.source,
            "split": split,
            "image_size": dataset.image_size,
            "n": n,
            "classes": json.dumps(classes),
            "norm": norm,
            "norm_mean": mean,
            "norm_std": std,
            "device": str(self.device),
            "precision": PRECISION_ATTR[self.precision],
        }

    def _write(self, path: Path, features: Features) -> None:
        """Temporary file in the same folder, 'complete' set last, then an atomic rename."""
        needed = tensor_bytes([features.layers, features.labels, features.targets])
        with atomic_h5(path, needed) as handle:
            for name, values in features.layers.items():
                _checksummed(handle, name, values)
            _checksummed(handle, "labels", features.labels)
            group = handle.create_group("targets")
            for name, values in features.targets.items():
                _checksummed(group, name, values)
            for name, value in features.meta.items():
                handle.attrs[name] = value


def _checksummed(group: h5py.Group, name: str, values: Tensor) -> None:
    """A dataset with HDF5's fletcher32 checksum per chunk: a flipped byte in the data fails the read
    (OSError), so corrupted features are rebuilt instead of silently changing probe accuracies."""
    array = values.numpy()
    group.create_dataset(name, data=array, fletcher32=array.size > 0)  # an empty dataset cannot be chunked


def _stream_settings(run_dir: Path) -> tuple[str, float, int]:
    """The run's data.loader, data.memory_gb and data.workers (how its images are read, so its probe
    features are read the same way); for a folder holding only a checkpoint: auto, 8 GiB, 0 workers."""
    try:
        data = load_run_config(run_dir).data
    except (UsageError, OSError):
        return "auto", 8.0, 0
    return data.loader, data.memory_gb, data.workers


def _plain(value: Any) -> Any:
    """HDF5 attribute -> JSON-friendly Python value."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
