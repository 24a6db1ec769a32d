"""How a probe data set's images are normalised before the frozen backbone sees them, as the official
eval_lr.py: the official constants where the official code has them, the training normalisation (0.5, 0.5)
for the sets the models were pretrained on, else the statistics of the set's own training split
(docs/probing.md, the feature cache)."""

from __future__ import annotations

import torch
from torch import Tensor

NORM = "train-split statistics"
OFFICIAL_NORM = "official constants"
TRAINING_NORM = "training normalisation (0.5, 0.5)"
MODEL_NORM = "the model's own constants"  # a foreign model's (mimcli.models.foreign), e.g. ImageNet's
# data_statistics.py of the official code (identical in its SimCLR, BYOL, BarTwins, Supervised folders).
OFFICIAL_STATISTICS: dict[str, tuple[list[float], list[float]]] = {
    "stl10": ([0.491, 0.482, 0.447], [0.247, 0.244, 0.262]),
    "cub200": ([0.483, 0.491, 0.424], [0.228, 0.224, 0.259]),
    "dtd": ([0.533, 0.474, 0.426], [0.261, 0.250, 0.259]),
    "fashionmnist": ([0.348, 0.348, 0.348], [0.347, 0.347, 0.347]),
    "mnist": ([0.170, 0.170, 0.170], [0.320, 0.320, 0.320]),
    "gtsrb": ([0.335, 0.291, 0.295], [0.267, 0.249, 0.251]),
    "flowers102": ([0.518, 0.410, 0.329], [0.296, 0.249, 0.285]),
}
TRAINING_SOURCES = ("cifar10", "cifar100", "shapes-")  # pretrained with Normalize(0.5, 0.5)


def channel_counts(images: Tensor) -> Tensor:
    """(3, 256) int64 histogram of uint8 images' values per channel: exact and order-free, so statistics
    summed batch by batch (streamed features) equal those of the whole set at once, bit for bit."""
    return torch.stack([torch.bincount(images[:, c].reshape(-1), minlength=256) for c in range(3)])


def stats_from_counts(counts: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std, in [0, 1] units, of the values a `channel_counts` histogram counts."""
    values = torch.arange(256, dtype=torch.float64) / 255
    count = counts.sum(dim=1).to(torch.float64)
    mean = (counts * values).sum(dim=1) / count
    std = ((counts * values.square()).sum(dim=1) / count - mean.square()).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def channel_stats(images: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (exact histograms, chunked)."""
    counts = torch.zeros(3, 256, dtype=torch.long)
    for chunk in torch.split(images, 4096):
        counts += channel_counts(chunk)
    return stats_from_counts(counts)


def norm_kind(source: str, mode: str = "official") -> str:
    """Which normalisation a probe data set gets (see the module docstring)."""
    if mode == "official" and source in OFFICIAL_STATISTICS:
        return OFFICIAL_NORM
    if mode == "official" and (source in TRAINING_SOURCES[:2] or source.startswith(TRAINING_SOURCES[2])):
        return TRAINING_NORM
    return NORM


def probe_normalization(
    source: str, train_images: Tensor, mode: str = "official"
) -> tuple[list[float], list[float], str]:
    """(mean, std, kind) for a probe data set's images."""
    kind = norm_kind(source, mode)
    if kind == OFFICIAL_NORM:
        mean, std = OFFICIAL_STATISTICS[source]
        return list(mean), list(std), kind
    if kind == TRAINING_NORM:
        return [0.5] * 3, [0.5] * 3, kind
    mean, std = channel_stats(train_images)
    return mean, std, kind
