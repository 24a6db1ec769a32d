"""Tiny CPU measurements of what two non-official choices change (docs/fidelity.md): no accuracy claims.

1. bf16 noise: the regulariser noise f(v) + sigma * eps added in bf16 (as mim did before it drew and added the
   noise in fp32), for pooled feature values f(v) of a given magnitude: the share of noise entries that round
   away entirely (noisy value == f(v); 200,000 draws per cell). A pooled block's values spread over such
   magnitudes, so its share lies between the cells its values cover.
2. LARS: a short SimCLR run (shapes, 256 images, width 8, batch 64, 2 epochs, LARS 0.3 x 64 / 256, per-epoch
   cosine, fp32), official LARS against train.lars_exclude_1d: the last epoch's loss and the share of the
   backbone's BatchNorm bias entries still exactly 0 (zero-initialised; the official trust ratio
   eta * ||w|| / ||g|| is 0 for them).
3. ImageNet probe train crops: the official RandomResizedCrop(224) (scale 0.08-1, ratio 3/4-4/3) drawn over a
   whole 500 x 375 image (4:3, the common ImageNet shape), against mim's, drawn within the image's centre
   square (what the probe holds): the share of the image no crop of mim's can reach, and the share of the
   official crops (torchvision's own `get_params`, 20,000 draws) that reach outside the centre square.

4. Training precision: CPU seconds (`time.process_time`, one thread) per step of the `quickstart` preset in
   fp32 and in bf16 autocast, the two alternated, the second epoch of each timed (3 steps of batch 128).
   On a CPU without AVX512-BF16 / AMX, bf16 is emulated: the step is slower, not faster.

    nice python experiments/fidelity_effects.py               # items 1-3, about a minute on an idle 2-core CPU
    nice python experiments/fidelity_effects.py --crops       # item 3 only, a few seconds
    nice python experiments/fidelity_effects.py --precision   # item 4 only, about a minute of CPU time
"""

from __future__ import annotations

import argparse
import tempfile
import time
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


def crop_reach(width: int = 500, height: int = 375, draws: int = 20_000) -> None:
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    side = min(width, height)
    left, right = (width - side) // 2, (width - side) // 2 + side  # the centre square's columns (landscape)
    image = torch.empty(3, height, width)
    outside, beyond = 0, 0.0
    for _ in range(draws):
        _, x, h, w = RandomResizedCrop.get_params(image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
        spill = max(0, left - x) + max(0, x + w - right)
        outside += spill > 0
        beyond += spill * h / (h * w)
    print(
        f"{width} x {height}: {100 * (1 - side / width):.1f} % of the image lies outside its centre square (no crop "
        f"of mim's reaches it); {100 * outside / draws:.1f} % of the official crops reach outside it, holding "
        f"{100 * beyond / draws:.1f} % of their area there on average ({draws} draws)"
    )


def precision_cost(epochs: int = 2) -> None:
    from mimcli.objectives.precision import cpu_has_fast_bf16

    torch.set_num_threads(1)
    overrides = ["data.shapes.n_train=384", "train.diagnostics_every=0", "train.threads=1", "probe.datasets=[]"]
    with tempfile.TemporaryDirectory() as out:
        trainers = {
            precision: build_trainer(
                load_config("quickstart", [*overrides, f"train.precision={precision}"]), Path(out) / precision
            )
            for precision in ("fp32", "bf16")
        }
        seconds = {}
        for _ in range(epochs):  # alternated, so background load hits both alike; the last epoch is kept
            for precision, trainer in trainers.items():
                start = time.process_time()
                trainer.train_epoch(None)
                seconds[precision] = (time.process_time() - start) / 3
    print(
        f"quickstart, CPU seconds per training step (batch 128, 1 thread; AVX512-BF16 or AMX: {cpu_has_fast_bf16()}): "
        f"fp32 {seconds['fp32']:.2f}, bf16 {seconds['bf16']:.2f} ({seconds['bf16'] / seconds['fp32']:.1f}x fp32)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", action="store_true", help="only the ImageNet probe's crop measurement")
    parser.add_argument("--precision", action="store_true", help="only the fp32 / bf16 step cost")
    args = parser.parse_args()
    if args.crops or args.precision:
        if args.crops:
            crop_reach()
        if args.precision:
            precision_cost()
        return
    torch.set_num_threads(2)
    crop_reach()
    noise_rounding()
    for exclude in (False, True):
        loss, zero = lars_run(exclude)
        label = "train.lars_exclude_1d=true" if exclude else "official LARS"
        print(f"{label}: last-epoch loss {loss:.4f}, backbone BatchNorm biases still 0: {100 * zero:.1f} %")


if __name__ == "__main__":
    main()
