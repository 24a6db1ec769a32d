"""Speed of the fidelity options (docs/fidelity.md), side by side in one run at small width.

`train.bn_stats`: per_view (official statistics, one pass split per view at every BatchNorm) vs
joint (both views as one batch). `train.loss_precision`: fp32 (official; losses outside autocast)
vs autocast (loss matmuls in bf16 where the device autocasts to bf16). Each cell is the real
`Trainer.train_epoch`; the configurations are interleaved over several rounds and the median kept,
so background load hits them alike.

    python benchmarks/options_speed.py            # about two minutes on a 2-core CPU; prints the table
    python benchmarks/options_speed.py --write    # also writes its section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_table import machine, markdown_table, update_section
from train_speed import time_mim

from mimcli.config import RunConfig, load_config

CASES = [("simclr", "rc"), ("byol", "none")]  # RC: BN in the decoder; BYOL: BN in heads and target
OPTIONS = [("per_view", "fp32"), ("joint", "fp32"), ("per_view", "autocast"), ("joint", "autocast")]


def config(method: str, kind: str, bn: str, loss: str, width: int, batch: int, device: str) -> RunConfig:
    return load_config(
        None,
        [
            f"model.width={width}",
            f"method.name='{method}'",
            f"regularizer.kind='{kind}'",
            f"train.batch_size={batch}",
            f"train.bn_stats='{bn}'",
            f"train.loss_precision='{loss}'",
            f"train.device='{device}'",
            "train.epochs=1000",
            "train.log_every=1000000",
        ],
    )


def measure(width: int, batch: int, steps: int, rounds: int, device: str) -> list[dict[str, Any]]:
    speeds: dict[tuple[str, str, str, str], list[float]] = {}
    for method, kind in CASES:  # process warm-up (kernel and allocator set-up), untimed
        time_mim(config(method, kind, *OPTIONS[0], width, batch, device), 1, warmup=1)
    for _ in range(rounds):
        for method, kind in CASES:
            for bn, loss in OPTIONS:
                cfg = config(method, kind, bn, loss, width, batch, device)
                speeds.setdefault((method, kind, bn, loss), []).append(time_mim(cfg, steps, warmup=2))
                print(
                    f"{method} + {kind}, {bn}, {loss}: {speeds[(method, kind, bn, loss)][-1]:.1f} img/s",
                    file=sys.stderr,
                    flush=True,
                )
    rows = []
    for (method, kind, bn, loss), values in speeds.items():
        base = statistics.median(speeds[(method, kind, "per_view", "fp32")])
        speed = statistics.median(values)
        label = method if kind == "none" else f"{method} + {kind}"
        rows.append(
            {"model": label, "bn_stats": bn, "loss_precision": loss, "img_per_s": speed, "vs_official": speed / base}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    rows = measure(args.width, args.batch, args.steps, args.rounds, args.device)
    table = markdown_table(rows, ["model", "bn_stats", "loss_precision", "img_per_s", "vs_official"])
    print(table)
    if args.write:
        command = "python benchmarks/options_speed.py --write"
        body = [
            f"## Fidelity options: {machine()}",
            "",
            f"`{command}`: ResNet-18 width {args.width}, batch {args.batch}, train.precision auto, median of "
            f"{args.rounds} interleaved rounds of {args.steps} steps. vs_official = speed / the official "
            "defaults' (per_view, fp32). Images/s counts images (each trained as two views).",
            "",
            table,
        ]
        print(f"wrote {update_section('options_speed', chr(10).join(body))}")


if __name__ == "__main__":
    main()
