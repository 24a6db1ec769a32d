"""One script for a short GPU lease: check correctness, then time every variant, in a single call.

1. Correctness: the fast path (bf16 autocast, channels_last, fused Adam) follows the eager fp32
   path's loss curve for the first epochs on the same data and seeds.
2. Speed: seconds per CIFAR-10-sized epoch (50,000 images, 32 px) for SimCLR, SimCLR + RC and
   SimCLR + LBE with ResNet-18 at batch 512, eager and with torch.compile, next to the arithmetic
   floor (2 views x 3.33 GFLOP per image at the device's dense bf16 rate).

    python benchmarks/gpu_check.py --dry-run          # tiny, on the CPU: checks that the script works
    python benchmarks/gpu_check.py --out $OUT         # on the GPU machine; writes gpu_check.json/.md

Timing uses synthetic uint8 images (speed does not depend on content); the loss-curve check uses
the generated `shapes` data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_table import machine, markdown_table, update_section
from train_speed import synthetic_images

from mimcli.config import load_config
from mimcli.data.shapes import generate_shapes
from mimcli.data.source import MemorySource

try:
    from mimcli.train.loop import build_trainer
except ImportError:  # an older tree, from before mimcli/train/ (benchmarks/epoch_times.py --before)
    from mimcli.train import Trainer as build_trainer  # type: ignore[no-redef]

# ResNet-18 at 32 px, forward + backward, per view (x 2 views x 50,000 images: 333 TFLOP a CIFAR-10 epoch)
FLOP_PER_VIEW = 3.33e9
DENSE_BF16_FLOPS = {"H200": 990e12, "H100": 990e12, "A100": 312e12}


def loss_curves(dry: bool, quick: bool, device: str) -> dict[str, Any]:
    """Per-epoch loss of eager fp32 vs the fast path, same data and seeds."""
    n, epochs, width = (256, 2, 8) if dry else (2048, 2, 16) if quick else (10_000, 3, 64)
    data = generate_shapes(n, seed=0)
    curves = {}
    for label, precision, channels_last in (("fp32 eager", "fp32", False), ("bf16 channels_last", "auto", True)):
        config = load_config(
            None,
            [
                f"model.width={width}",
                "regularizer.kind='rc'",
                "train.batch_size=128",
                f"train.epochs={epochs}",
                f"train.precision='{precision}'",
                f"train.channels_last={str(channels_last).lower()}",
                f"train.device='{device}'",
            ],
        )
        trainer = build_trainer(config, Path("/nonexistent"), data=data)
        curves[label] = [round(trainer.train_epoch(None).terms["loss"], 4) for _ in range(epochs)]
    a, b = curves.values()
    worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    return {"curves": curves, "max_relative_gap": worst, "ok": worst < 0.05}


def epoch_time(kind: str, width: int, batch: int, compile_: bool, n_images: int, device: str) -> dict[str, Any]:
    config = load_config(
        None,
        [
            f"model.width={width}",
            f"regularizer.kind='{kind}'",
            f"train.batch_size={batch}",
            "train.epochs=10",
            f"train.compile={str(compile_).lower()}",
            f"train.device='{device}'",
            "train.log_every=1000000",
        ],
    )
    trainer = build_trainer(config, Path("/nonexistent"), data=synthetic_images(batch * 3))
    trainer.train_epoch(None)  # warm-up: compilation, cuDNN autotuning, allocator
    trainer.data = synthetic_images(n_images, seed=1)
    trainer.source = MemorySource(trainer.data, trainer.device, trainer.augment, trainer.model.method.n_views)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = trainer.train_epoch(None)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # steadier than wall time on a shared CPU
    memory = torch.cuda.max_memory_allocated() / 2**30 if trainer.device.type == "cuda" else 0.0
    return {
        "method": {"none": "SimCLR", "rc": "SimCLR + RC", "lbe": "SimCLR + LBE"}[kind],
        "width": width,
        "batch": batch,
        "compile": compile_,
        "s/epoch (50k)": seconds * 50_000 / n_images,
        "img/s": result.images / seconds,
        "peak GiB": memory,
        "CPU s/epoch (50k)": cpu_seconds * 50_000 / n_images,
    }


def floor_seconds() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    rate = next((v for k, v in DENSE_BF16_FLOPS.items() if k in name), None)
    return 50_000 * 2 * FLOP_PER_VIEW / rate if rate else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--quick", action="store_true", help="small sizes on the GPU, eager only: a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--write", action="store_true", help="also update docs/benchmarks.md")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "auto"
    report: dict[str, Any] = {"machine": machine()}
    report["loss_curves"] = loss_curves(args.dry_run, args.quick, device)
    print(json.dumps(report["loss_curves"]), flush=True)
    rows = []
    # torch.compile costs about a minute of the lease per model, so it is timed on SimCLR alone, last
    cases = [("none", 64, False), ("rc", 64, False), ("lbe", 64, False), ("rc", 16, False), ("none", 64, True)]
    if args.dry_run or args.quick:
        cases = [case for case in cases if not case[2]]
    images = 128 if args.dry_run else 10_000 if args.quick else 50_000
    for kind, width, compile_ in cases[:1] if args.dry_run else cases:
        try:
            row = epoch_time(kind, 8 if args.dry_run else width, 32 if args.dry_run else 512, compile_, images, device)
        except Exception as error:  # one failing variant must not cost the whole lease
            traceback.print_exc()
            row = {"method": kind, "width": width, "compile": compile_, "error": str(error).splitlines()[0]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    report["epochs"] = rows
    report["floor_s_per_epoch"] = floor_seconds()
    table = markdown_table(rows, ["method", "width", "batch", "compile", "s/epoch (50k)", "img/s", "peak GiB"])
    floor = report["floor_s_per_epoch"]
    text = (
        f"## GPU check: {report['machine']}\n\n`python benchmarks/gpu_check.py`. Loss curves (fp32 eager vs "
        f"bf16 channels_last, first epochs): {report['loss_curves']['curves']} (max relative gap "
        f"{report['loss_curves']['max_relative_gap']:.3f}).\n\n{table}\n\nArithmetic floor: "
        f"{f'{floor:.2f}' if floor else 'n/a'} s per epoch."
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
        (args.out / "gpu_check.md").write_text(text)
    if args.write and not (args.dry_run or args.quick):  # a CPU dry run proves the script works, not the GPU's speed
        update_section("gpu_check", text)
    print(text)


if __name__ == "__main__":
    main()
