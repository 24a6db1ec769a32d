"""How a probe data set's images are normalised before the frozen backbone sees them, as the official
eval_lr.py: the official constants where the official code has them, the training normalisation (0.5, 0.5)
for the sets the models were pretrained on, else the statistics of the set's own training split
(docs/probing.md, the feature cache)."""

from __future__ import annotations

import torch
from torch import Tensor

from mimcli.config.datasets import source_record

NORM = "train-split statistics"
OFFICIAL_NORM = "official constants"
TRAINING_NORM = "training normalisation (0.5, 0.5)"
MODEL_NORM = "the model's own constants"  # a foreign model's (mimcli.models.foreign), e.g. ImageNet's


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
    """Which normalisation the images `source` get: their record's official constants or the training
    (0.5, 0.5) under mode "official", else (and for unregistered sets) their train split's statistics."""
    record = source_record(source) if mode == "official" else None
    if record is not None and record.statistics is not None:
        return OFFICIAL_NORM
    if record is not None and record.training_norm:
        return TRAINING_NORM
    return NORM


def probe_normalization(
    source: str, train_images: Tensor, mode: str = "official"
) -> tuple[list[float], list[float], str]:
    """(mean, std, kind) for a probe data set's images (`source`: their name in the feature cache)."""
    kind = norm_kind(source, mode)
    record = source_record(source)
    if kind == OFFICIAL_NORM and record is not None and record.statistics is not None:
        return list(record.statistics[0]), list(record.statistics[1]), kind
    if kind == TRAINING_NORM:
        return [0.5] * 3, [0.5] * 3, kind
    mean, std = channel_stats(train_images)
    return mean, std, kind
