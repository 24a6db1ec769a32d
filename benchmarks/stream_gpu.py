"""Stream mode on a GPU: images/s of `Trainer.train_epoch` for the ImageNet recipe's model (ResNet-50,
224 px, SimCLR, bf16, channels_last) fed by the streaming path (PIL decoding in DataLoader workers,
crop from the original image, flip/colour on the GPU), next to the same model fed from memory.

Run once on an H200 (docs/benchmarks.md) through benchmarks/gpu_lease.sh; on a GPU machine:

    python benchmarks/stream_gpu.py --images 4096 --batch 256 --workers 14 --write

It generates photo-sized JPEGs (as benchmarks/stream_memory.py), trains one warm-up epoch and one
timed epoch per loader, and writes its section of docs/benchmarks.md with the GPU named.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_table import machine, markdown_table, update_section
from stream_memory import write_photos

from mimcli.config import load_config
from mimcli.train.loop import build_trainer


def epoch_rate(root: Path, loader: str, images: int, batch: int, workers: int) -> dict[str, object]:
    config = load_config(
        "imagenet-simclr",
        [
            f"data.root='{root}'",
            f"data.loader={loader}",
            f"data.workers={workers}",
            f"data.subset={images}",
            f"train.batch_size={batch}",
            "train.epochs=2",
            "train.log_every=1000000",
            "probe.datasets=[]",
            "train.precision=auto",  # as measured before the preset turned to the official fp32
        ],
    )
    trainer = build_trainer(config, Path(tempfile.gettempdir()) / "unused")
    trainer.train_epoch(None)  # warm-up: cuDNN autotuning, allocator, worker start
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    result = trainer.train_epoch(None)
    return {"loader": loader, "images/s": result.images / result.seconds, "epoch s": result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=14)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write stream_gpu.md here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_photos(Path(tmp), args.images)
        rows = [epoch_rate(Path(tmp), loader, args.images, args.batch, args.workers) for loader in ("memory", "stream")]
    body = (
        f"## Stream mode on a GPU, ResNet-50 224 px: {machine()}\n\n"
        f"`python benchmarks/stream_gpu.py --images {args.images} --batch {args.batch} --workers {args.workers} "
        f"--write` (SimCLR, bf16, 500 x 375 JPEGs):\n\n{markdown_table(rows, ['loader', 'images/s', 'epoch s'])}\n"
    )
    print(body)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "stream_gpu.md").write_text(body)
    if args.write:
        update_section("stream-gpu", body)


if __name__ == "__main__":
    main()
