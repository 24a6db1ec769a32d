"""Stream mode on the CPU: resident memory does not grow with the number of images, and its speed
next to memory mode on the same folder.

1. Generates 1k and 8k photo-sized JPEGs (500 x 375, smooth random colour fields plus grain, 10
   class folders) in a temporary directory.
2. For each set, in a fresh subprocess (peak RSS is per process): index the folder and run a short
   stream-mode pass (STEPS steps of BATCH images at SIZE px, 2 decoding workers, flip/colour on the
   CPU). Reports the peak RSS of the training process and of its largest worker
   (`resource.getrusage`, RUSAGE_SELF / RUSAGE_CHILDREN), so the difference 8k - 1k is what the
   number of images costs.
3. Speed: one epoch of `Trainer.train_epoch` (SimCLR, ResNet-18 width 8, SIZE px) on the same
   SPEED_IMAGES images, memory mode vs stream mode (2 workers), side by side.

    python benchmarks/stream_memory.py            # print the tables
    python benchmarks/stream_memory.py --write    # also replace its section of docs/benchmarks.md

Keep it short: the machine the numbers come from may share its cores with other jobs (noted in the
table header); compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_table import in_fresh_process, machine, markdown_table, update_section

COUNTS = (1000, 8000)
STEPS, BATCH, SIZE, WORKERS = 10, 32, 64, 2
SPEED_IMAGES = 512


def write_photos(folder: Path, n: int, seed: int = 0) -> None:
    """n JPEGs of 500 x 375: an upsampled 6 x 8 random colour field with per-pixel grain (quality 90)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        target = folder / "train" / f"c{i % 10}"
        target.mkdir(parents=True, exist_ok=True)
        field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
        pixels = np.asarray(field, dtype=np.int16) + rng.integers(-12, 13, (375, 500, 3), dtype=np.int16)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(target / f"img{i:05d}.jpg", quality=90)


def stream_pass(root: str) -> dict[str, float]:
    """Run in a subprocess: index root, stream STEPS steps, report peak RSS in MiB."""
    import torch

    from mimcli.config import load_config
    from mimcli.data.augment import BatchAugment
    from mimcli.data.sampler import epoch_order
    from mimcli.data.source import StreamSource
    from mimcli.data.stream import index_split

    torch.set_num_threads(1)
    start = time.perf_counter()
    index = index_split(root, "train")
    source = StreamSource(index, torch.device("cpu"), BatchAugment(load_config(None, []).augment, SIZE), 2, WORKERS)
    order = epoch_order(len(index), 0, BATCH)[:STEPS]
    views = sum(len(v) for v, _ in source.batches(order, 0, torch.Generator().manual_seed(0)))
    seconds = time.perf_counter() - start
    return {
        "images": len(index),
        "views": views,
        "seconds": seconds,
        "main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def measure_memory(root: Path) -> dict[str, float]:
    return in_fresh_process("stream_memory", "stream_pass", str(root))


def measure_speed(root: Path) -> list[dict[str, object]]:
    """Images/s of one epoch, memory vs stream, same images, same model and seed."""
    from mimcli.config import load_config
    from mimcli.train.loop import build_trainer

    rows = []
    for loader in ("memory", "stream"):
        config = load_config(
            None,
            [
                "model.width=8",
                "data.dataset=imagefolder",
                f"data.root='{root}'",
                f"data.image_size={SIZE}",
                f"data.loader={loader}",
                f"data.workers={WORKERS}",
                f"data.subset={SPEED_IMAGES}",
                f"train.batch_size={BATCH}",
                "train.epochs=1",
                "train.log_every=1000000",
                "probe.datasets=[]",
            ],
        )
        start = time.perf_counter()
        trainer = build_trainer(config, Path(tempfile.gettempdir()) / "unused")
        setup = time.perf_counter() - start
        result = trainer.train_epoch(None)
        rows.append(
            {
                "loader": loader,
                "setup s (decode all / index)": setup,
                "epoch images/s": result.images / result.seconds,
                "epoch s": result.seconds,
            }
        )
    rows.append({"loader": "stream / memory", "epoch images/s": rows[1]["epoch images/s"] / rows[0]["epoch images/s"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="replace this section of docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        memory_rows = []
        for n in COUNTS:
            folder = Path(tmp) / f"photos{n}"
            write_photos(folder, n)
            memory_rows.append({"images": n, **{k: v for k, v in measure_memory(folder).items() if k != "images"}})
        growth = memory_rows[1]["main_mib"] - memory_rows[0]["main_mib"]
        worker_growth = memory_rows[1]["worker_mib"] - memory_rows[0]["worker_mib"]
        speed_rows = measure_speed(Path(tmp) / "photos1000")
    memory_table = markdown_table(memory_rows, ["images", "views", "seconds", "main_mib", "worker_mib"])
    speed_table = markdown_table(speed_rows, ["loader", "setup s (decode all / index)", "epoch images/s", "epoch s"])
    load = os.getloadavg()[0]
    body = (
        f"## Stream mode: memory and speed: {machine()}\n\n"
        f"`python benchmarks/stream_memory.py --write` (500 x 375 JPEGs; load average {load:.1f} at the end of "
        f"the run: the cores were shared with other jobs, so the speeds are noisy). Peak RSS (MiB) of a "
        f"{STEPS}-step stream pass ({BATCH} images x 2 views at {SIZE} px, "
        f"{WORKERS} workers), training process and largest worker:\n\n{memory_table}\n\n"
        f"8k - 1k images: **{growth:+.1f} MiB** in the training process, {worker_growth:+.1f} MiB per worker "
        f"(limit 100 MB).\n\nOne epoch on {SPEED_IMAGES} of the same images (SimCLR, ResNet-18 width 8, {SIZE} px, "
        f"batch {BATCH}); memory mode's setup decodes every image once, stream mode's lists the files:\n\n"
        f"{speed_table}\n"
    )
    print(body)
    if args.write:
        print(f"wrote {update_section('stream-memory', body)}")


if __name__ == "__main__":
    main()
