"""What the information-plane diagnostics cost: their share of an epoch on the `shapes-study` preset.

Builds the preset's Trainer (5,000 generated images, ResNet-18 width 16, batch 128, diagnostics on
256 images every epoch), trains `--epochs` epochs and times, after each, the diagnostics call the
training loop makes (`Trainer.measure`: three forward passes of the fixed batch in eval mode, then
the estimators), `--repeats` times. Share = median diagnostics time / median epoch time.

    python benchmarks/diagnostics_cost.py [--epochs 2] [--repeats 3] [--threads N] [--write]
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
from docs_table import machine, markdown_table, update_section  # noqa: E402
from mimcli.config import load_config  # noqa: E402
from mimcli.train import Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes-study")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.preset, ["train.diagnostics_every=1"])
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, Path(folder))
        epochs, measures, estimates = [], [], []
        for _ in range(args.epochs):
            epochs.append(trainer.train_epoch(None).seconds)
            for _ in range(args.repeats):
                start = time.perf_counter()
                trainer.measure()
                measures.append(time.perf_counter() - start)
            estimates.append(trainer.measure()["info"]["seconds"])
    epoch, measure = statistics.median(epochs), statistics.median(measures)
    rows = [{"what": "training epoch", "seconds": epoch, "share of epoch (%)": 100.0},
            {"what": f"diagnostics ({config.train.diagnostics_images} images, all estimators)", "seconds": measure,
             "share of epoch (%)": 100 * measure / epoch}]
    table = markdown_table(rows, ["what", "seconds", "share of epoch (%)"])
    print(table)
    if args.write:
        body = (f"## Information-plane diagnostics (issue 17): {machine()}\n\n"
                f"`python benchmarks/diagnostics_cost.py --write`: preset `{args.preset}` "
                f"({config.data.shapes.n_train} images, {config.model.backbone} width {config.model.width}, "
                f"batch {config.train.batch_size}, precision {config.train.precision}); medians over "
                f"{args.epochs} epochs and {args.epochs * args.repeats} diagnostics calls.\n\n{table}\n\n"
                "The diagnostics run three fp32 forward passes of the fixed batch in eval mode and a few "
                "eigendecompositions of 256 x 256 matrices; `train.diagnostics_every` spaces them out.")
        print(f"wrote {update_section('diagnostics_cost', body)}")


if __name__ == "__main__":
    main()
