"""The official linear evaluation of ImageNet-pretrained models (eval_lr_imagenet.py), which run_probes uses
when probe.recipe resolves to "imagenet" (auto: a run pretrained at 224 px or more, as the official switch
on --dataset ImageNet):

- train (L80-L84): every epoch, each train image gets a fresh RandomResizedCrop(224) (scale 0.08-1, ratio
  3/4-4/3) and horizontal flip, is normalised per data set and encoded afresh by the frozen backbone (eval mode);
- test (L86-L90): Resize(256) + CenterCrop(224), encoded once and cached like any probe set (the held-out
  10% of the validation-selected accuracy are scored on the train split under the same test transform);
- fc (L140-L144): weights N(0, 0.01), bias 0; SGD lr 0.3, momentum 0.9, CosineAnnealingLR over the
  epochs, stepped per epoch; batch probe.batch_size (128, main.sh L29) with drop_last (L115).

Images are held decoded at 256 x 256: the shorter side resized to 256 and the centre square kept
(Resize(256) + CenterCrop(256)), so the centre 224 of it is the official test transform exactly, up to
the interpolation (torch's antialiased bilinear, not PIL's). The train crops are drawn within that centre
square, where the official RandomResizedCrop draws them over the whole image (docs/fidelity.md). Sets
read from image folders (ImageNet itself) are not held in memory here: run_probes probes them with the
paper recipe (their record says so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mimcli.config import IMAGENET_SIZE, AugmentSection, ProbeSection, RunConfig
from mimcli.data.augment import BatchAugment
from mimcli.data.images import ImageData
from mimcli.data.transfer import Fit, TransferDataset
from mimcli.errors import UsageError
from mimcli.probe.extract import layer_names
from mimcli.probe.linear import LinearParams

STORE_SIZE = 256  # Resize(256)
STORE_FIT: Fit = "centre_crop"  # its centre square: what CenterCrop(224) and the train crops read
CROP_SIZE = 224  # RandomResizedCrop(224) / CenterCrop(224)
LR = 0.3
INIT_STD = 0.01


def uses_imagenet_recipe(config: RunConfig) -> bool:
    """probe.recipe, with auto read off the pretraining resolution (ImageNet from 224 px)."""
    recipe = config.probe.recipe
    return recipe == "imagenet" or (recipe == "auto" and config.data.image_size >= IMAGENET_SIZE)


def imagenet_params(section: ProbeSection) -> LinearParams:
    return LinearParams(
        epochs=section.epochs,
        lr=LR,
        batch_size=section.batch_size,
        drop_last=section.drop_last,
        schedule="cosine",
        init_std=INIT_STD,
    )


def centre_crop(data: ImageData, size: int) -> ImageData:
    """torchvision's CenterCrop(size) on a uint8 batch: top = round((H - size) / 2), likewise left."""
    height, width = data.images.shape[-2:]
    top, left = round((height - size) / 2), round((width - size) / 2)
    return dataclasses.replace(data, images=data.images[..., top : top + size, left : left + size].contiguous())


class ImagenetProbeData:
    """One probe set under the ImageNet recipe: its images decoded once at 256 px, its test-transform view
    (cached features) and its augmented train epochs."""

    def __init__(self, dataset: TransferDataset) -> None:
        if dataset.files is not None:
            raise UsageError(
                f"{dataset.name}: the ImageNet probe recipe re-encodes augmented train images every epoch from "
                "memory; image folders are probed with the paper recipe"
            )
        if dataset.fit != STORE_FIT:  # its loader would squash: bind it with resolve_dataset(..., fit=STORE_FIT)
            raise UsageError(f"{dataset.name}: the ImageNet probe recipe needs fit {STORE_FIT!r}, got {dataset.fit!r}")
        # a set decoded at its native size (the pretraining set) is square and resized up to 256 on loading
        self.dataset = dataclasses.replace(dataset, image_size=STORE_SIZE)
        self._images: tuple[ImageData, ImageData] | None = None

    def images(self) -> tuple[ImageData, ImageData]:
        if self._images is None:
            self._images = self.dataset.load()
        return self._images

    def centred(self) -> TransferDataset:
        """Resize(256) + CenterCrop(224) of both splits, under its own cache name."""

        def load() -> tuple[ImageData, ImageData]:
            train, test = self.images()
            return centre_crop(train, CROP_SIZE), centre_crop(test, CROP_SIZE)

        source = f"{self.dataset.source}-s{STORE_SIZE}c{CROP_SIZE}"  # shorter side 256 (was r: squashed)
        return dataclasses.replace(self.dataset, source=source, image_size=CROP_SIZE, loader=load)


def augmented_epochs(
    backbone: nn.Module,
    images: Tensor,
    mean: list[float],
    std: list[float],
    layers: list[int],
    device: torch.device,
    precision: str = "fp32",
    seed: int = 0,
    batch_size: int = 256,
) -> Callable[[int], Tensor]:
    """epoch -> the (n, D) features of that epoch's RandomResizedCrop(224) + flip of every image (uint8,
    n x 3 x 256 x 256), seeded by (seed, epoch), so a probe is reproducible."""
    recipe = AugmentSection.model_validate({"jitter_p": 0.0, "grayscale_p": 0.0, "mean": mean, "std": std})
    augment = BatchAugment(recipe, CROP_SIZE)
    names = layer_names(layers)

    @torch.no_grad()
    def features(epoch: int) -> Tensor:
        backbone.eval()
        generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)
        out = []
        for chunk in torch.split(images, batch_size):
            views = augment(chunk.to(device), generator)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                pooled = backbone(views)
            out.append(torch.cat([pooled[name].float() for name in names], dim=1))
        return torch.cat(out)

    return features
