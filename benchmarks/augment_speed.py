"""Views per second of BatchAugment against per-image pipelines, on CIFAR-like 32 x 32 uint8 batches of 512.

    python benchmarks/augment_speed.py [--device cpu|cuda|all] [--quick] [--threads N] [--write]

Rows (all the paper's recipe: RandomResizedCrop(32, (0.08, 1)), flip 0.5, ColorJitter(0.8, 0.8, 0.8, 0.2)
p 0.8, RandomGrayscale 0.2, Normalize(0.5, 0.5)):

- mimcli BatchAugment: one call per batch (mimcli/data/augment.py);
- torchvision v2, per image: `transforms.v2.Compose` on each uint8 image tensor, then `torch.stack`;
- torchvision PIL, per image: the classic path, `ToPILImage` then the v1 transforms and `ToTensor` (CPU);
- kornia.augmentation, batched: the same recipe with kornia's batch transforms (not a project dependency:
  skipped when `import kornia` fails; `pip install kornia` to include it);
- crop + flip + resize alone, three batched ways: the per-sample resampling matrices BatchAugment uses,
  `F.affine_grid` + `F.grid_sample` (bilinear, no antialias), and `torchvision.ops.roi_align`.

Each figure is the best of several timed repeats (after a warm-up; CUDA synchronised), which is the
least disturbed by other load on the machine: views/s from wall-clock time, and views per second of
process CPU time (steadier on a shared machine; with one thread it is the work itself). `vs tv v2` is
views/s over the per-image torchvision v2 pipeline's on the same device. `--threads` sets torch's
intra-op threads (default: leave as is). `--write` also puts the Markdown table in its own
section of docs/benchmarks.md (machine named).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchvision_reference import torchvision_pipeline

from mimcli.config import AugmentSection
from mimcli.data.augment import BatchAugment, crop_weights, resample

SIZE = 32
BATCH = 512


def _images(device: str, batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 8, 8, generator=g)
    smooth = F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return (smooth * 255).round().to(torch.uint8).to(device)


def _best_seconds(fn: Callable[[], object], device: str, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Best wall-clock and best process CPU seconds of one call, over `repeats` timed calls."""
    for _ in range(warmup):
        fn()
    wall = cpu = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def _torchvision_pil(cfg: AugmentSection) -> Callable[[torch.Tensor], torch.Tensor]:
    import torchvision.transforms as T1

    return T1.Compose(
        [
            T1.ToPILImage(),
            T1.RandomResizedCrop(SIZE, scale=cfg.crop_scale, ratio=cfg.crop_ratio),
            T1.RandomHorizontalFlip(cfg.flip_p),
            T1.RandomApply([T1.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)], p=cfg.jitter_p),
            T1.RandomGrayscale(cfg.grayscale_p),
            T1.ToTensor(),
            T1.Normalize(cfg.mean, cfg.std),
        ]
    )


def _kornia(cfg: AugmentSection, device: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        import kornia.augmentation as K
    except Exception:  # not installed (it is not a project dependency), or broken
        return None
    pipeline = torch.nn.Sequential(
        K.RandomResizedCrop((SIZE, SIZE), scale=cfg.crop_scale, ratio=cfg.crop_ratio),
        K.RandomHorizontalFlip(p=cfg.flip_p),
        K.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=cfg.jitter_p),
        K.RandomGrayscale(p=cfg.grayscale_p),
        K.Normalize(mean=torch.tensor(cfg.mean), std=torch.tensor(cfg.std)),
    ).to(device)
    return lambda images: pipeline(images.float().div_(255))


def _crop_backends(aug: BatchAugment, images: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """crop + flip + resize of one batch, three ways, for the same sampled boxes."""
    batch = images.shape[0]
    params = aug.sample_params(batch, SIZE, SIZE, images.device, torch.Generator(images.device).manual_seed(0))
    top, left, height, width = params.boxes.float().unbind(1)
    flip = params.flip

    def matrices() -> torch.Tensor:
        rows, cols = crop_weights(params.boxes, SIZE, SIZE, SIZE, flip, gain=1 / 255)
        return resample(images, rows, cols)

    def grid_sample() -> torch.Tensor:
        sign = 1.0 - 2.0 * flip.float()  # a flip mirrors the x axis of the sampling grid
        theta = torch.zeros(batch, 2, 3, device=images.device)
        theta[:, 0, 0] = sign * width / SIZE
        theta[:, 0, 2] = (2 * left + width) / SIZE - 1
        theta[:, 1, 1] = height / SIZE
        theta[:, 1, 2] = (2 * top + height) / SIZE - 1
        grid = F.affine_grid(theta, [batch, 3, SIZE, SIZE], align_corners=False)
        unit = images.float().div_(255)
        return F.grid_sample(unit, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def roi_align() -> torch.Tensor:
        from torchvision.ops import roi_align as roi

        rois = torch.stack(
            [torch.arange(batch, device=images.device, dtype=torch.float32), left, top, left + width, top + height],
            dim=1,
        )
        out = roi(images.float().div_(255), rois, (SIZE, SIZE), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)

    return {
        "crop+flip+resize: resampling matrices (BatchAugment)": matrices,
        "crop+flip+resize: affine_grid + grid_sample": grid_sample,
        "crop+flip+resize: torchvision.ops.roi_align": roi_align,
    }


def measure(device: str, quick: bool) -> list[dict]:
    """Rows for one device ("cpu", "cuda"): device, method, views_per_s (wall clock), ms_per_512, ratio (views/s
    over torchvision v2 per image), views_per_cpu_s (per second of process CPU time: steadier on a shared
    machine; on CUDA it counts only the host side), threads."""
    cfg = AugmentSection()
    images = _images(device)
    aug = BatchAugment(cfg, SIZE)
    generator = torch.Generator(device).manual_seed(0)
    batched_repeats = 5 if quick else 20
    per_image_count = 128 if quick else 512
    per_image_repeats = 2 if quick else 3

    timings: list[tuple[str, int, tuple[float, float]]] = []  # (method, views, (wall, cpu) seconds)

    def batched(name: str, fn: Callable[[], object]) -> None:
        timings.append((name, BATCH, _best_seconds(fn, device, batched_repeats)))

    def per_image(name: str, transform: Callable[[torch.Tensor], torch.Tensor], source: torch.Tensor) -> None:
        subset = source[:per_image_count]
        seconds = _best_seconds(
            lambda: torch.stack([transform(image) for image in subset]), device, per_image_repeats, warmup=1
        )
        timings.append((name, per_image_count, seconds))

    batched("mimcli BatchAugment (batched)", lambda: aug(images, generator))
    per_image("torchvision v2, per image (uint8 tensors)", torchvision_pipeline(cfg, SIZE), images)
    if device == "cpu":
        per_image("torchvision PIL, per image (ToPILImage)", _torchvision_pil(cfg), images)
    kornia = _kornia(cfg, device)
    if kornia is not None:
        batched("kornia.augmentation (batched)", lambda: kornia(images))
    for name, fn in _crop_backends(aug, images).items():
        batched(name, fn)

    reference = next(views / wall for name, views, (wall, _) in timings if name.startswith("torchvision v2"))
    return [
        {
            "device": device,
            "method": name,
            "views_per_s": views / wall,
            "ms_per_512": wall / views * BATCH * 1e3,
            "ratio": views / wall / reference,
            "views_per_cpu_s": views / cpu if cpu > 0 else float("nan"),
            "threads": torch.get_num_threads(),
        }
        for name, views, (wall, cpu) in timings
    ]


def markdown(rows: list[dict]) -> str:
    lines = [
        f"Augmentation throughput, 32 x 32 uint8 batches of {BATCH}, paper recipe "
        f"(torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        "best of repeats; ratio = over torchvision v2 per image):",
        "",
        "| device | threads | method | views/s | ms per 512 views | ratio | views per CPU-second |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['device']} | {r['threads']} | {r['method']} | {r['views_per_s']:,.0f} | "
            f"{r['ms_per_512']:.1f} | {r['ratio']:.1f}x | {r['views_per_cpu_s']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="all", help="cpu, cuda or all (cuda when available)")
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: unchanged)")
    parser.add_argument("--write", action="store_true", help="write the table to docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    rows = [row for device in devices for row in measure(device, args.quick)]
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from docs_table import machine, update_section

        text = (
            f"## Augmentation alone: {machine()}\n\n`python benchmarks/augment_speed.py --write"
            f"{' --threads ' + str(args.threads) if args.threads else ''}`: two views per image, 32x32 uint8, "
            f"batch {BATCH}, best of repeats.\n\n{markdown(rows)}"
        )
        print(f"wrote {update_section('augment_speed', text)}")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Augmentation views/s, 32x32 uint8, batch {BATCH} (best of repeats)")
    for column in ("device", "threads", "method", "views/s", "ms / 512", "vs tv v2", "views / CPU s"):
        table.add_column(column, justify="left" if column in ("device", "method") else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["device"],
            str(r["threads"]),
            r["method"],
            f"{r['views_per_s']:,.0f}",
            f"{r['ms_per_512']:.1f}",
            f"{r['ratio']:.1f}x",
            f"{r['views_per_cpu_s']:,.0f}",
        )
    console = Console(width=max(Console().width, 140))
    console.print(table)
    ours = {r["device"]: r for r in rows if r["method"].startswith("mimcli")}
    for r in rows:
        if r["method"].startswith("kornia"):
            speedup = ours[r["device"]]["views_per_s"] / r["views_per_s"]
            verdict = "keep BatchAugment" if speedup >= 2 else "within 2x: the issue prefers the library"
            console.print(f"{r['device']}: BatchAugment / kornia = {speedup:.1f}x -> {verdict}")


if __name__ == "__main__":
    main()
