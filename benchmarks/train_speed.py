"""Training speed: mim's step against the reference pipeline, side by side in one run.

mim: the data set as uint8 tensors on the device, batched per-sample augmentation, both views in
one forward pass, bf16 autocast (when the device has fast bf16) and channels_last — exactly
`Trainer.train_epoch`.
Reference: torchvision per-image PIL transforms in a DataLoader, fp32 eager, one forward pass per
view — the way the paper's code and most tutorials train. Same model, same loss, same batch.

    python benchmarks/train_speed.py --quick     # about a minute on a 2-core CPU; last line "speedup: X.XXx"
    python benchmarks/train_speed.py --write     # full table, written to docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_table import machine, markdown_table, update_section

from mimcli.config import RunConfig, load_config
from mimcli.data.batch import Batch
from mimcli.data.images import ImageData
from mimcli.data.source import MemorySource
from mimcli.methods.compose import build_model
from mimcli.objectives.precision import resolve_precision

try:
    from mimcli.train.loop import build_trainer
except ImportError:  # an older tree, from before mimcli/train/ (benchmarks/epoch_times.py --before)
    from mimcli.train import Trainer as build_trainer  # type: ignore[no-redef]


def synthetic_images(n: int, size: int = 32, seed: int = 0) -> ImageData:
    """Smooth random colour images (augmentation cost does not depend on content)."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=generator)
    images = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    images = (images * 255).round().to(torch.uint8)
    return ImageData(images, torch.zeros(n, dtype=torch.long), ["x"])


def bench_config(width: int, kind: str, batch: int, precision: str, device: str) -> RunConfig:
    return load_config(
        None,
        [
            f"model.width={width}",
            f"regularizer.kind='{kind}'",
            f"train.batch_size={batch}",
            f"train.precision='{precision}'",
            f"train.device='{device}'",
            "train.epochs=1000",
            "train.log_every=1000000",
        ],
    )


def time_mim(config: RunConfig, steps: int, warmup: int) -> float:
    """Images/s of Trainer.train_epoch over `steps` batches (after `warmup` batches)."""
    batch = config.train.batch_size
    trainer = build_trainer(config, Path("/nonexistent"), data=synthetic_images(batch * warmup))
    trainer.train_epoch(None)
    trainer.data = synthetic_images(batch * steps, seed=1)
    trainer.source = MemorySource(trainer.data, trainer.device, trainer.augment, trainer.model.method.n_views)
    _sync(trainer.device)
    result = trainer.train_epoch(None)
    _sync(trainer.device)
    return result.images / result.seconds


class PilTwoViews(torch.utils.data.Dataset):
    """The per-image reference: PIL images, torchvision transforms, two views per item."""

    def __init__(self, data: ImageData, config: RunConfig) -> None:
        from torchvision import transforms as T

        aug = config.augment
        self.images = [T.functional.to_pil_image(image) for image in data.images]
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(config.data.image_size, scale=aug.crop_scale, ratio=aug.crop_ratio),
                T.RandomHorizontalFlip(aug.flip_p),
                T.RandomApply([T.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue)], p=aug.jitter_p),
                T.RandomGrayscale(aug.grayscale_p),
                T.ToTensor(),
                T.Normalize(aug.mean, aug.std),
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return self.transform(image), self.transform(image)


def time_reference(config: RunConfig, steps: int, warmup: int, workers: int) -> float:
    """Images/s of the reference loop: DataLoader + PIL transforms, fp32, one forward per view."""
    device = torch.device("cuda" if config.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    batch = config.train.batch_size
    torch.manual_seed(0)
    model = build_model(config, 10).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    dataset = PilTwoViews(synthetic_images(batch * (steps + warmup)), config)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers, persistent_workers=False
    )
    start = 0.0
    for step, (x1, x2) in enumerate(loader):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        x1, x2 = x1.to(device), x2.to(device)
        f1, f2 = model.backbone(x1), model.backbone(x2)
        clean = {name: torch.cat([f1[name], f2[name]]) for name in f1}
        batch_ = Batch(torch.cat([x1, x2]), torch.zeros(batch, dtype=torch.long, device=device), 2)
        noisy = model.regularizer.perturb(clean)
        loss = (
            model.method.loss(noisy, batch_)["method"] + model.lam * model.regularizer.loss(clean, noisy, batch_)["reg"]
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(quick: bool, device: str = "auto") -> list[dict[str, Any]]:
    on_cuda = device != "cpu" and torch.cuda.is_available()
    if quick:
        cases = [(16, "none")]
        batch, steps, warmup = 128, 6, 2
    else:
        cases = [(w, k) for w in (64, 16) for k in ("none", "rc", "lbe")]
        batch, steps, warmup = (512, 40, 5) if on_cuda else (128, 4, 2)
    rows = []
    for width, kind in cases:
        label = {"none": "SimCLR", "rc": "SimCLR + RC", "lbe": "SimCLR + LBE"}[kind]
        fp32 = bench_config(width, kind, batch, "fp32", device)
        auto = bench_config(width, kind, batch, "auto", device)
        dtype = resolve_precision("auto", torch.device("cuda" if on_cuda else "cpu"))
        reference = time_reference(fp32, steps, warmup, workers=0 if on_cuda else 1)
        mim_fp32 = time_mim(fp32, steps, warmup)
        mim_auto = time_mim(auto, steps, warmup) if dtype is not None else mim_fp32
        rows.append(
            {
                "model": f"ResNet-18 w{width}",
                "method": label,
                "batch": batch,
                "reference img/s": reference,
                "mim fp32 img/s": mim_fp32,
                f"mim {'bf16' if dtype else 'fp32'} img/s": mim_auto,
                "speedup": mim_auto / reference,
                "s/epoch (50k, mim)": 50_000 / mim_auto,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one narrow model, a few steps (about a minute)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--write", action="store_true", help="write the table to docs/benchmarks.md")
    parser.add_argument("--skip-augment", action="store_true", help="do not measure the augmentation alone")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = measure(args.quick, args.device)
    columns = list(rows[0])
    table = Table(title=f"training speed: {machine()}")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row.values()])
    console.print(table)
    augment_rows: list[dict[str, Any]] = []
    if not args.skip_augment and not args.quick:
        from augment_speed import measure as measure_augment

        augment_rows = measure_augment(
            "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu", quick=False
        )
        console.print(markdown_table(augment_rows, list(augment_rows[0])))
    if args.write:
        body = [
            f"## Training step ({'quick' if args.quick else 'full'}): {machine()}",
            "",
            "`python benchmarks/train_speed.py --write`. Reference = torchvision per-image PIL transforms "
            "in a DataLoader (1 worker on CPU), fp32 eager, one forward pass per view. mim = the real "
            "`Trainer.train_epoch`: uint8 data on the device, batched augmentation, both views in one pass, "
            "channels_last, bf16 autocast where the device has fast bf16. Images/s counts images (each "
            "trained as two views).",
            "",
            markdown_table(rows, columns),
        ]
        if augment_rows:
            body += [
                "",
                "Augmentation alone (two views per image):",
                "",
                markdown_table(augment_rows, list(augment_rows[0])),
            ]
        console.print(f"wrote {update_section('train_speed', chr(10).join(body))}")
    speedup = rows[0]["speedup"] if args.quick else min(r["speedup"] for r in rows)
    print(f"speedup: {speedup:.2f}x")


if __name__ == "__main__":
    main()
