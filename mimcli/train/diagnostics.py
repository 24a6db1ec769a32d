"""Information-plane diagnostics during training: I(z1; z2), I(z; v) and I(z; factor) on a fixed batch.

Definitions (the same for every method and regulariser, so their numbers compare):

- the evaluation batch: `train.diagnostics_images` training images chosen once by a seeded
  permutation, with two augmented views drawn once from a fixed generator. Nothing here draws
  from the global RNG or changes the model, so training (and exact resume) is unaffected.
- z = the backbone's pooled layer-4 features (eval mode, fp32): z1, z2 of the two views, z of
  the clean image (resized and normalised as the probes see it).
- v = the clean image itself, average-pooled to 8 x 8 pixels and flattened (192 numbers in [0, 1]).
- factors: every extra target the data set knows (`shapes`: shape and hue as classes, position as
  (x, y)); classes get the delta kernel, continuous targets the Gaussian kernel.

Estimators (mimcli.train.mutual_information, nats): matrix-based Renyi (alpha = 1.01) for
everything, KSG for I(z1; z2) and I(z; v), InfoNCE with a fixed cosine critic for I(z1; z2). Each
I(z; factor) comes with its shuffled-label floor and a bootstrap interval (factor_estimates). A run
of train.epochs = 0 records one line at epoch 0: the estimates before the first step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mimcli.config import RunConfig
from mimcli.data.augment import BatchAugment, normalize_only
from mimcli.data.images import ImageData
from mimcli.data.stream import ImageIndex
from mimcli.errors import UsageError
from mimcli.rundir.runs import INFO_KEY
from mimcli.train.mutual_information import (
    cosine_scores,
    gaussian_gram,
    infonce,
    ksg,
    label_gram,
    renyi_entropy,
    renyi_mutual_information,
    resample_indices,
    resampled_interval,
    shuffled,
)

SEED_OFFSET = 7_777  # the evaluation batch's seed is train.seed + this: fixed per run, apart from training draws
PIXEL_GRID = 8
RESAMPLES = 10  # bootstrap batches behind each I(z; factor) interval (each: 3 eigendecompositions per factor)
FLOOR_SEED = 0  # the shuffles and resamples: a generator of their own, so training's RNG is untouched
KEY = INFO_KEY  # written by the diagnostics, read by the report (which must not import this module)


def diagnostics_interval(config: RunConfig) -> int:
    """Epochs between measurements: train.diagnostics_every, or by default every epoch on `shapes`, else never."""
    every = config.train.diagnostics_every
    if every is None:
        return 1 if config.data.dataset == "shapes" else 0
    return every


@dataclass
class Diagnostics:
    """The fixed evaluation batch of one run and the measurement made on it."""

    every: int
    views: tuple[Tensor, Tensor]
    clean: Tensor
    pixels: Tensor
    factors: dict[str, Tensor]

    @classmethod
    def build(
        cls, config: RunConfig, data: ImageData | ImageIndex, augment: BatchAugment, device: torch.device
    ) -> Diagnostics | None:
        """None when diagnostics are off for this run."""
        every = diagnostics_interval(config)
        if every <= 0:
            return None
        if not isinstance(data, ImageData):
            raise UsageError(
                "train.diagnostics_every needs the images in memory: set data.loader='memory' "
                "or train.diagnostics_every=0"
            )
        seed = config.train.seed + SEED_OFFSET
        count = min(config.train.diagnostics_images, len(data))
        index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]
        images = data.images[index].to(device)
        generator = torch.Generator(device).manual_seed(seed)
        with torch.no_grad():
            views = (augment(images, generator), augment(images, generator))
            clean = normalize_only(images, config, config.data.image_size)
            pixels = F.adaptive_avg_pool2d(images.double() / 255, PIXEL_GRID).flatten(1)
        factors = {name: target[index].to(device) for name, target in data.targets.items()}
        return cls(every, views, clean, pixels, factors)

    def due(self, epoch: int) -> bool:
        return epoch % self.every == 0

    @torch.no_grad()
    def measure(self, backbone: nn.Module, epoch: int) -> dict[str, Any]:
        """{KEY: {estimate name: nats, "seconds": cost}} after `epoch` epochs, or {} when not due."""
        if not self.due(epoch):
            return {}
        start = time.perf_counter()
        was_training = backbone.training
        backbone.eval()
        try:
            z1, z2, z = (backbone(x)["layer4"].double() for x in (*self.views, self.clean))
        finally:
            backbone.train(was_training)
        estimates = information_estimates(z1, z2, z, self.pixels, self.factors)
        estimates["seconds"] = time.perf_counter() - start
        return {KEY: estimates}


def information_estimates(
    z1: Tensor, z2: Tensor, z: Tensor, pixels: Tensor, factors: dict[str, Tensor]
) -> dict[str, float]:
    """Every estimate the diagnostics record, from features and the things they are compared with."""
    gram_z1, gram_z2, gram_z, gram_v = (gaussian_gram(t) for t in (z1, z2, z, pixels))
    out: dict[str, float | Tensor] = {
        "z1_z2_renyi": renyi_mutual_information(gram_z1, gram_z2),
        "z1_z2_infonce": infonce(cosine_scores(z1, z2)),
        "z1_z2_ksg": ksg(z1, z2),
        "z_v_renyi": renyi_mutual_information(gram_z, gram_v),
        "z_v_ksg": ksg(z, pixels),
    }
    generator = torch.Generator().manual_seed(FLOOR_SEED)
    resamples = z_resamples(gram_z, generator)
    for name, target in factors.items():
        out |= factor_estimates(f"z_{name}_renyi", gram_z, target, generator, resamples)
    return {name: float(value) for name, value in out.items()}


def _target_gram(target: Tensor) -> Tensor:
    return gaussian_gram(target) if target.is_floating_point() else label_gram(target)


def z_resamples(gram_z: Tensor, generator: torch.Generator, count: int = RESAMPLES) -> list[tuple[Tensor, Tensor]]:
    """(index, S(z) on it) for `count` bootstrap batches, shared by every factor: the batch's own kernel
    (its width fixed by the whole batch), so a resample costs no new distances."""
    out = []
    for index in resample_indices(len(gram_z), count, generator):
        index = index.to(gram_z.device)
        out.append((index, renyi_entropy(gram_z[index][:, index])))
    return out


def factor_estimates(
    key: str, gram_z: Tensor, target: Tensor, generator: torch.Generator, resamples: list[tuple[Tensor, Tensor]]
) -> dict[str, float]:
    """I(z; factor) under `key`, its shuffled-label floor (`key`_shuffled) and a 95 % interval over the
    bootstrap batches `resamples` (`key`_low, `key`_high): compare two models only where a difference
    exceeds both."""
    point = float(renyi_mutual_information(gram_z, _target_gram(target)))
    floor = float(renyi_mutual_information(gram_z, _target_gram(shuffled(target, generator))))
    resampled = []
    for index, entropy_z in resamples:
        gram_t = _target_gram(target[index])
        joint = gram_z[index][:, index] * gram_t
        resampled.append(float(entropy_z + renyi_entropy(gram_t) - renyi_entropy(joint)))
    low, high = resampled_interval(point, resampled)
    return {key: point, f"{key}_shuffled": floor, f"{key}_low": low, f"{key}_high": high}
