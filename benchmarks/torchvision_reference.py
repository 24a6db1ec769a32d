"""torchvision's per-image augmentation pipeline, the reference mimcli.data.augment.BatchAugment reproduces.

It lives beside the benchmarks, not in the package: mim never uses it; tests/data/test_augment.py compares
view statistics with it and benchmarks/augment_speed.py times it as the baseline.
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2 as T

from mimcli.config import AugmentSection


def torchvision_pipeline(aug: AugmentSection, out_size: int) -> T.Compose:
    """The per-image torchvision (transforms.v2) Compose that BatchAugment reproduces, for uint8 (3, H, W)
    tensors: the oracle in tests/data/test_augment.py and the baseline in benchmarks/augment_speed.py."""
    return T.Compose(
        [
            T.RandomResizedCrop(out_size, scale=aug.crop_scale, ratio=aug.crop_ratio, antialias=True),
            T.RandomHorizontalFlip(aug.flip_p),
            T.RandomApply([T.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue)], p=aug.jitter_p),
            T.RandomGrayscale(aug.grayscale_p),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(aug.mean, aug.std),
        ]
    )
