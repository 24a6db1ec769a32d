"""What the information-plane diagnostics cost: their share of an epoch on the `shapes-study` preset.

Builds the preset's Trainer (5,000 generated images, ResNet-18 width 16, batch 128, diagnostics on
256 images every epoch), trains `--epochs` epochs and times, after each, the diagnostics call the
training loop makes (`Trainer.measure`: three forward passes of the fixed batch in eval mode, then
the estimators), `--repeats` times. Share = median diagnostics time / median epoch time.

On a busy machine `--images N` trains on N of the preset's images instead and scales the epoch time
by n_train / N (an epoch is n_train / batch identical steps, so its time is linear in n_train);
the table says when it did.

    python benchmarks/diagnostics_cost.py [--epochs 2] [--repeats 3] [--images N] [--threads N] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_table import machine, markdown_table, update_section

from mimcli.config import load_config
from mimcli.train.loop import build_trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes-study")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--images", type=int, default=None, help="train on this many images, scale the epoch time")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    full = load_config(args.preset, ["train.diagnostics_every=1"])
    images = args.images or full.data.shapes.n_train
    config = load_config(args.preset, ["train.diagnostics_every=1", f"data.shapes.n_train={images}"])
    scale = full.data.shapes.n_train / images
    with tempfile.TemporaryDirectory() as folder:
        trainer = build_trainer(config, Path(folder))
        epochs: list[float] = []
        measures: list[float] = []
        for _ in range(args.epochs):
            epochs.append(trainer.train_epoch(None).seconds * scale)
            for _ in range(args.repeats):
                start = time.perf_counter()
                trainer.measure()
                measures.append(time.perf_counter() - start)
    epoch, measure = statistics.median(epochs), statistics.median(measures)
    scaled = f" (measured on {images} images, x {scale:.1f})" if scale != 1 else ""
    rows = [
        {
            "what": f"training epoch, {full.data.shapes.n_train} images{scaled}",
            "seconds": epoch,
            "share of epoch (%)": 100.0,
        },
        {
            "what": f"diagnostics ({config.train.diagnostics_images} images, all estimators)",
            "seconds": measure,
            "share of epoch (%)": 100 * measure / epoch,
        },
    ]
    table = markdown_table(rows, ["what", "seconds", "share of epoch (%)"])
    print(table)
    if args.write:
        options = "".join(
            f" --{k} {v}"
            for k, v in (
                ("epochs", args.epochs),
                ("repeats", args.repeats),
                ("images", args.images),
                ("threads", args.threads),
            )
            if v
        )
        body = (
            f"## Information-plane diagnostics: {machine()}\n\n"
            f"`python benchmarks/diagnostics_cost.py{options} --write`: preset `{args.preset}` "
            f"({full.data.shapes.n_train} images, {config.model.backbone} width {config.model.width}, "
            f"batch {config.train.batch_size}, precision {config.train.precision}); medians over "
            f"{args.epochs} epochs and {args.epochs * args.repeats} diagnostics calls.\n\n{table}\n\n"
            "The diagnostics run three fp32 forward passes of the fixed batch in eval mode and a few "
            "eigendecompositions of 256 x 256 matrices; `train.diagnostics_every` spaces them out."
        )
        print(f"wrote {update_section('diagnostics_cost', body)}")


if __name__ == "__main__":
    main()
