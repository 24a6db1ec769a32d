"""Learning rate and target momentum as pure functions of the global step (as dinov2 indexes its schedules by
iteration and nanoGPT's get_lr does).

`step` counts optimiser steps from the start of training, 0 for the first; the loop computes both values at the
top of every step. Nothing is stepped or saved, so a resumed run gets the same values from its step count alone.
A per-epoch schedule is the same function of `step // steps_per_epoch`: its value holds for a whole epoch.
"""

from __future__ import annotations

import math

from mimcli.config import TrainSection


def base_lr(train: TrainSection, global_batch: int) -> float:
    """train.lr, except for LARS, where it is the rate per 256 images (ImageNet recipe: 0.3 x global batch / 256)."""
    return train.lr * global_batch / 256 if train.optimizer == "lars" else train.lr


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """lr factor at `step`: step / warmup during warm-up (Barlow Twins' official schedule), then
    half a cosine from 1 to 0 over the remaining steps."""
    if step < warmup_steps:
        return step / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def lr_factor(train: TrainSection, step: int, steps_per_epoch: int) -> float:
    """Constant (the paper's CIFAR recipe); cosine to zero, per epoch; or warm-up then cosine, per step (the
    ImageNet LARS recipe)."""
    if train.schedule == "warmup_cosine":
        warmup = round(train.warmup_epochs * steps_per_epoch)
        return warmup_cosine(step, warmup, train.epochs * steps_per_epoch)
    if train.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step // steps_per_epoch) / max(train.epochs, 1)))
    return 1.0


def learning_rate(train: TrainSection, global_batch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimiser step `step`."""
    return base_lr(train, global_batch) * lr_factor(train, step, steps_per_epoch)


def target_momentum(base: float, step: int, steps_per_epoch: int, epochs: int) -> float:
    """An EMA target's momentum at `step`, per epoch: m = 1 - (1 - base) (cos(pi epoch / epochs) + 1) / 2, from
    `base` to 1 (BYOL, docs/fidelity.md). base = 1 gives 1: a target that never moves."""
    return 1 - (1 - base) * (math.cos(math.pi * (step // steps_per_epoch) / epochs) + 1) / 2
