"""Cached linear probe vs the reference protocol that re-encodes every image every epoch.

The paper's code runs the frozen backbone inside the probe's training loop: each of the 100
epochs encodes the training images again, batch by batch, and encodes the test images again to
evaluate. With the backbone frozen and in eval mode those features are the same every epoch, so
`mim probe` encodes once, caches the features in HDF5 and trains on them. This script measures
both on the same machine, images, backbone, seed and protocol (SGD lr 0.01, momentum 0.9, batch
128, lr x0.1 at 60% and 80% of the epochs):

  reference      per epoch: encode each shuffled batch of 128 train images, nn.Linear +
                 cross-entropy + torch.optim.SGD step; then encode the test images and evaluate.
                 Images are pre-decoded uint8 tensors (the reference is not charged for JPEG decoding).
  cached, first  extract train + test features once, write the HDF5 cache, then `linear_probe`:
                 two models (the paper's best-test one and the validation-selected one).
  cached, hit    read the HDF5 cache and run the same `linear_probe` (what every later probe costs).

Both use the same initialisation and batch order (seeded like `fit_linear`), so the best-test
accuracies should agree to within float rounding. Images: a per-class subset of the CIFAR-10 JPEG
archive given with --archive (docs/development.md, "The CIFAR-10 JPEG archive"), else generated shapes.

Without --quick it also times `linear_probe` alone on 50,000 x 512 synthetic features.

    python benchmarks/probe_speed.py [--quick] [--threads N] [--archive cifar10-jpeg.tar.gz]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from mimcli.config import ShapesSection, load_config
from mimcli.data.images import ImageData
from mimcli.data.transfer import resolve_dataset
from mimcli.models.resnet import build_backbone
from mimcli.probe import LinearParams, linear_probe
from mimcli.probe.cache import FeatureCache
from mimcli.probe.normalization import channel_stats
from mimcli.rundir.runs import BACKBONE, save_config

WIDTH = 8
SEED = 0


def unpack_cifar_subset(archive: Path, folder: Path, per_class_train: int, per_class_test: int) -> Path:
    """cifar10-jpeg/{train,test}/<class>/NNNN.jpg with NNNN below the per-class counts."""
    limits = {"train": per_class_train, "test": per_class_test}

    def wanted(member: tarfile.TarInfo) -> bool:
        parts = Path(member.name).parts  # cifar10-jpeg, split, class, NNNN.jpg
        return member.isfile() and len(parts) == 4 and int(Path(parts[3]).stem) < limits.get(parts[1], 0)

    with tarfile.open(archive) as tar:
        tar.extractall(folder, members=[m for m in tar if wanted(m)], filter="data")
    return folder / "cifar10-jpeg"


def make_run(root: Path, image_size: int = 32) -> Path:
    """A run directory holding a random narrow ResNet-18 (probe speed does not depend on training)."""
    run_dir = root / "run"
    config = load_config(None, [f"model.width={WIDTH}", f"data.image_size={image_size}"])
    save_config(run_dir, config)
    torch.manual_seed(SEED)
    backbone = build_backbone("resnet18", WIDTH, image_size)
    torch.save(backbone.state_dict(), run_dir / BACKBONE)
    return run_dir


@torch.no_grad()
def encode(backbone: nn.Module, images: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return backbone((images.float() / 255 - shift) / scale)["layer4"]


def reference_probe(
    backbone: nn.Module, train: ImageData, test: ImageData, params: LinearParams, seed: int = SEED
) -> list[float]:
    """The re-encoding protocol; returns the test accuracy (%) after every epoch."""
    mean, std = channel_stats(train.images)
    shift, scale = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    classes = int(train.labels.max()) + 1
    dim = backbone.out_dim
    generator = torch.Generator().manual_seed(seed)  # the same draws as fit_linear: init, then shuffles
    initial = (torch.rand(classes, dim + 1, generator=generator) * 2 - 1) / math.sqrt(dim)
    head = nn.Linear(dim, classes)
    with torch.no_grad():
        head.weight.copy_(initial[:, :dim])
        head.bias.copy_(initial[:, dim])
    optimizer = torch.optim.SGD(head.parameters(), lr=params.lr, momentum=params.momentum)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, params.milestones, params.gamma)
    history = []
    for _ in range(params.epochs):
        for batch in torch.randperm(len(train), generator=generator).split(params.batch_size):
            features = encode(backbone, train.images[batch], shift, scale)
            loss = nn.functional.cross_entropy(head(features), train.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        with torch.no_grad():
            correct = sum(
                (head(encode(backbone, chunk, shift, scale)).argmax(1) == labels).sum().item()
                for chunk, labels in zip(test.images.split(512), test.labels.split(512))
            )
        history.append(correct / len(test) * 100)
    return history


def load_images(root: Path, quick: bool, archive: Path | None = None) -> tuple[str, Any]:
    """(description, TransferDataset) of a CIFAR-10 JPEG subset, or of generated shapes without the archive."""
    per_class = (50, 20) if quick else (200, 50)
    if archive is not None:
        folder = unpack_cifar_subset(archive, root / "images", *per_class)
        name = f"CIFAR-10 JPEG, {per_class[0] * 10} train / {per_class[1] * 10} test"
        return name, resolve_dataset(f"imagefolder:{folder}", root=root, image_size=32)
    sizes = ShapesSection(n_train=per_class[0] * 10, n_test=per_class[1] * 10)
    return f"shapes:shape, {sizes.n_train} train / {sizes.n_test} test", resolve_dataset(
        "shapes:shape", root=root, image_size=32, shapes=sizes
    )


def measure(quick: bool = False, archive: Path | None = None) -> list[dict[str, Any]]:
    """One row per method: seconds, speed-up over the reference, best-test and val-selected accuracy."""
    params = LinearParams(epochs=10 if quick else 100)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = make_run(root)
        description, dataset = load_images(root, quick, archive)
        train, test = dataset.load()
        in_memory = dataclasses.replace(dataset, loader=lambda: (train, test))  # nobody is charged for decoding

        start = time.perf_counter()
        backbone = FeatureCache(run_dir).backbone()
        reference = reference_probe(backbone, train, test, params)
        reference_s = time.perf_counter() - start

        runs = []
        for label in ("cached, first: extract + probe", "cached, hit: read + probe"):
            start = time.perf_counter()
            features_train, features_test = FeatureCache(run_dir).get(in_memory)
            metrics = linear_probe(
                features_train.matrix([4]),
                features_train.labels,
                features_test.matrix([4]),
                features_test.labels,
                [SEED],
                params,
            )
            runs.append((label, time.perf_counter() - start, metrics))

    common = {"data": description, "epochs": params.epochs, "width": WIDTH, "threads": torch.get_num_threads()}
    rows = [
        {
            "method": "reference: re-encode each epoch",
            "seconds": reference_s,
            "speedup": 1.0,
            "acc_best_test": max(reference),
            "acc_val_selected": None,
            "delta_best_test": 0.0,
            **common,
        }
    ]
    for label, seconds, metrics in runs:
        best = metrics["acc_best_test"]["mean"]
        rows.append(
            {
                "method": label,
                "seconds": seconds,
                "speedup": reference_s / seconds,
                "acc_best_test": best,
                "acc_val_selected": metrics["acc_val_selected"]["mean"],
                "delta_best_test": best - max(reference),
                **common,
            }
        )
    return rows


def measure_features_only(n: int = 50_000, dim: int = 512, classes: int = 10, n_test: int = 10_000) -> dict[str, Any]:
    """linear_probe alone on CIFAR-sized synthetic features (the cost of every probe once features are cached)."""
    generator = torch.Generator().manual_seed(SEED)
    centres = torch.randn(classes, dim, generator=generator)
    labels = torch.randint(0, classes, (n + n_test,), generator=generator)
    features = (centres[labels] + 3 * torch.randn(n + n_test, dim, generator=generator)).relu()
    start, cpu = time.perf_counter(), time.process_time()
    linear_probe(features[:n], labels[:n], features[n:], labels[n:], [SEED], LinearParams())
    return {
        "shape": f"{n} x {dim} train, {n_test} test, {classes} classes",
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
    }


def print_rows(rows: list[dict[str, Any]], console: Console) -> None:
    first = rows[0]
    table = Table(
        title=f"linear probe, {first['epochs']} epochs: {first['data']}, ResNet-18 width {first['width']}, "
        f"{first['threads']} thread(s)"
    )
    for column in ("method", "seconds", "x faster", "acc best-test %", "delta vs reference", "acc val-selected %"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        val = "-" if row["acc_val_selected"] is None else f"{row['acc_val_selected']:.2f}"
        table.add_row(
            row["method"],
            f"{row['seconds']:.2f}",
            f"{row['speedup']:.1f}",
            f"{row['acc_best_test']:.2f}",
            f"{row['delta_best_test']:+.2f}",
            val,
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 epochs on 500 / 200 images (a smoke test)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for both methods")
    parser.add_argument("--write", action="store_true", help="write the table to docs/benchmarks.md")
    parser.add_argument("--archive", type=Path, default=None, help="cifar10-jpeg.tar.gz (else generated shapes)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    rows = measure(args.quick, args.archive)
    print_rows(rows, console)
    lines = []
    if not args.quick:
        large = measure_features_only()
        lines.append(
            f"linear_probe alone (2 models x 100 epochs) on {large['shape']}: "
            f"{large['seconds']:.1f} s wall, {large['cpu_seconds']:.1f} s CPU"
        )
        console.print(lines[-1])
    if args.write:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from docs_table import machine, markdown_table, update_section

        columns = ["method", "seconds", "speedup", "acc_best_test", "delta_best_test", "acc_val_selected"]
        text = (
            f"## Linear probe on cached features: {machine()}\n\n`python benchmarks/probe_speed.py --write"
            f"{' --threads ' + str(args.threads) if args.threads else ''}`: {rows[0]['epochs']} epochs, "
            f"{rows[0]['data']}, ResNet-18 width {rows[0]['width']}.\n\n{markdown_table(rows, columns)}\n\n"
            + "\n".join(lines)
        )
        console.print(f"wrote {update_section('probe_speed', text)}")


if __name__ == "__main__":
    main()
