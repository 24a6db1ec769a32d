"""Tiny CPU measurements of what two non-official choices change (docs/fidelity.md): no accuracy claims.

1. bf16 noise: the regulariser noise f(v) + sigma * eps added in bf16 (as mim did before it drew and added the
   noise in fp32), for pooled feature values f(v) of a given magnitude: the share of noise entries that round
   away entirely (noisy value == f(v); 200,000 draws per cell). A pooled block's values spread over such
   magnitudes, so its share lies between the cells its values cover.
2. LARS: a short SimCLR run (shapes, 256 images, width 8, batch 64, 2 epochs, LARS 0.3 x 64 / 256, per-epoch
   cosine, fp32), official LARS against train.lars_exclude_1d: the last epoch's loss and the share of the
   backbone's BatchNorm bias entries still exactly 0 (zero-initialised; the official trust ratio
   eta * ||w|| / ||g|| is 0 for them).

    nice python experiments/fidelity_effects.py     # about a minute on an idle 2-core CPU
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from mimcli.config import load_config
from mimcli.train.loop import build_trainer


def noise_rounding() -> None:
    generator = torch.Generator().manual_seed(0)
    for sigma in (0.01, 0.1):
        cells = []
        for magnitude in (0.25, 0.5, 1.0, 2.0, 4.0):
            mu = torch.full((200_000,), magnitude, dtype=torch.bfloat16)
            eps = torch.randn(mu.shape, generator=generator).to(torch.bfloat16)  # randn_like(bf16) draws in bf16
            noisy = mu + sigma * eps  # the old computation: bf16 throughout
            cells.append(f"|f(v)| {magnitude}: {100 * (noisy == mu).float().mean().item():.1f} %")
        print(f"sigma {sigma}, noise rounded away in bf16 (0 % in fp32): " + ", ".join(cells))


def lars_run(exclude_1d: bool) -> tuple[float, float]:
    config = load_config(
        None,
        [
            "model.width=8",
            "data.dataset=shapes",
            "data.shapes.n_train=256",
            "data.shapes.n_test=16",
            "train.batch_size=64",
            "train.epochs=2",
            "train.optimizer=lars",
            "train.lr=0.3",
            "train.weight_decay=1e-6",
            "train.schedule=cosine",
            "train.precision=fp32",
            f"train.lars_exclude_1d={str(exclude_1d).lower()}",
            "train.log_every=1000000",
            "probe.datasets=[]",
        ],
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(config, Path(out) / "run")
        results = [trainer.train_epoch(None) for _ in range(config.train.epochs)]
    norms = torch.nn.modules.batchnorm._BatchNorm
    biases = [m.bias for m in trainer.model.backbone.modules() if isinstance(m, norms)]
    still_zero = torch.cat([b.detach().flatten() == 0 for b in biases]).float().mean().item()
    return results[-1].terms["loss"], still_zero


def main() -> None:
    torch.set_num_threads(2)
    noise_rounding()
    for exclude in (False, True):
        loss, zero = lars_run(exclude)
        label = "train.lars_exclude_1d=true" if exclude else "official LARS"
        print(f"{label}: last-epoch loss {loss:.4f}, backbone BatchNorm biases still 0: {100 * zero:.1f} %")


if __name__ == "__main__":
    main()
