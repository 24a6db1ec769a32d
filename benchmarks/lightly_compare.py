"""mim against lightly's SimCLR pipeline on the same device, in the same run: images/s each and the ratio.

lightly (1.6): its `SimCLRTransform` on PIL images in a `DataLoader` with one worker per CPU core
(persistent, pinned), its `NTXentLoss`, one forward pass per view, as its SimCLR examples train.
mim: the real `Trainer.train_epoch` (uint8 data on the device, batched views, one pass over both).
Both train the same model (mim's ResNet-18 and SimCLR projector, built by `build_model` from the same
seed), at the same batch, in the same precision (bf16 autocast on a GPU, fp32 on a CPU without fast
bf16), with Adam. Images are synthetic 32 x 32 (speed does not depend on content); each side is
timed over `--steps` steps after `--warmup` steps (lightly's worker start-up not counted).

    python benchmarks/lightly_compare.py --out $OUT --write   # GPU: ResNet-18 width 64, batch 512
    python benchmarks/lightly_compare.py --dry-run            # CPU, tiny: checks that the script works

The GPU machine is offline, so lightly travels as wheels in the git-ignored `.whl/` folder, which
`benchmarks/gpu_lease.sh` installs (with --no-deps: lightly's transforms and loss need only
lightning-utilities beside torch and torchvision):

    pip download --no-deps -d .whl lightly==1.6.0 lightning-utilities==0.15.3

Without lightly the script prints one line saying so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_table import machine, markdown_table, save
from train_speed import _sync, bench_config, synthetic_images, time_mim

from mimcli.config import RunConfig
from mimcli.methods.compose import build_model
from mimcli.objectives.precision import resolve_precision

WHEELS = "pip download --no-deps -d .whl lightly==1.6.0 lightning-utilities==0.15.3"


class PilViews(torch.utils.data.Dataset[tuple[list[torch.Tensor], int]]):
    """PIL images in memory (as torchvision's CIFAR10 holds them), each item the transform's list of views."""

    def __init__(self, images: torch.Tensor, transform: Any) -> None:
        from torchvision.transforms.functional import to_pil_image

        self.images = [to_pil_image(image) for image in images]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int]:
        return self.transform(self.images[index]), 0


def time_lightly(config: RunConfig, steps: int, warmup: int, workers: int, device: torch.device) -> float:
    """Images/s of lightly's loop: SimCLRTransform in a DataLoader, one forward per view, NTXentLoss."""
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform

    aug, batch = config.augment, config.train.batch_size
    transform = SimCLRTransform(
        input_size=config.data.image_size,
        cj_prob=aug.jitter_p,
        cj_bright=aug.brightness,
        cj_contrast=aug.contrast,
        cj_sat=aug.saturation,
        cj_hue=aug.hue,
        min_scale=aug.crop_scale[0],
        random_gray_scale=aug.grayscale_p,
        gaussian_blur=0.0,  # lightly's CIFAR-10 setting, and the paper's recipe has no blur
        hf_prob=aug.flip_p,
        normalize={"mean": list(aug.mean), "std": list(aug.std)},
    )
    dataset = PilViews(synthetic_images(batch * (steps + warmup)).images, transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )
    torch.manual_seed(config.train.seed)
    model = build_model(config, 1).to(device)
    backbone, projector = model.backbone, model.method.projector  # type: ignore[union-attr]
    criterion = NTXentLoss(temperature=config.method.temperature)  # type: ignore[union-attr]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    dtype = resolve_precision(config.train.precision, device)
    start = 0.0
    for step, ((x0, x1), _) in enumerate(loader):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        x0, x1 = x0.to(device, non_blocking=True), x1.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            z0 = projector(backbone(x0)["layer4"])
            z1 = projector(backbone(x1)["layer4"])
            loss = criterion(z0, z1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def lightly_version() -> str | None:
    try:
        import lightly.loss
        import lightly.transforms
    except ImportError:
        return None
    import lightly

    return str(lightly.__version__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, width 8, batch 16, 2 steps")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="lightly's DataLoader workers")
    parser.add_argument("--out", type=Path, default=None, help="folder for lightly_compare.json and .md")
    parser.add_argument("--write", action="store_true", help="also update docs/benchmarks.md (not with --dry-run)")
    args = parser.parse_args()
    if args.dry_run:
        torch.set_num_threads(1)  # tiny tensors: more threads only wait for each other on a shared machine
    version = lightly_version()
    if version is None:
        print(f"lightly_compare: skipped, lightly is not installed (wheels: {WHEELS})")
        return
    if args.dry_run:
        args.width, args.batch, args.steps, args.warmup, args.workers = 8, 16, 2, 1, 0
    device_name = "cpu" if args.dry_run else "auto"
    config = bench_config(args.width, "none", args.batch, "auto", device_name)
    device = torch.device("cuda" if device_name == "auto" and torch.cuda.is_available() else "cpu")
    precision = resolve_precision("auto", device)
    theirs = time_lightly(config, args.steps, args.warmup, args.workers, device)
    ours = time_mim(config, args.steps, args.warmup)
    row: dict[str, Any] = {
        "model": f"ResNet-18 w{args.width}, SimCLR",
        "batch": args.batch,
        "precision": "bf16" if precision else "fp32",
        f"lightly {version} img/s": theirs,
        "mim img/s": ours,
        "mim / lightly": ours / theirs,
        "lightly workers": args.workers,
    }
    print(json.dumps(row), flush=True)
    command = "python benchmarks/lightly_compare.py" + (" --dry-run" if args.dry_run else "")
    text = (
        f"## mim against lightly: {machine()}\n\n`{command}`: lightly's SimCLRTransform + DataLoader + "
        f"NTXentLoss against mim's `Trainer.train_epoch`, the same model, batch and precision, {args.steps} "
        f"steps each after {args.warmup} warm-up steps.\n\n{markdown_table([row], list(row))}"
    )
    save("lightly_compare", {"row": row}, text, args.out, args.write and not args.dry_run)


if __name__ == "__main__":
    main()
