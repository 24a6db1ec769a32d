"""The paper's linear probe (docs/probing.md): every seed's model trained at once with hand-written
gradients equal to nn.Linear + cross-entropy + SGD; best-test and validation-selected accuracy."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from mimcli.config import ProbeSection
from mimcli.probe.records import Summary
from mimcli.probe.stats import one_cpu_thread, summary, val_split

MOMENTUM = 0.9
GAMMA = 0.1
MILESTONES = (0.6, 0.8)  # fractions of the epochs: 60 and 80 of 100
LINEAR_SELECTION = (
    "acc_best_test: trained on the whole train split, best test accuracy over epochs (paper); "
    "acc_val_selected: trained on a seeded 90% of the train split, test accuracy at the epoch "
    "with the best accuracy on the held-out 10% (earliest on ties)"
)


@dataclass(frozen=True)
class LinearParams:
    epochs: int = 100
    lr: float = 0.01
    batch_size: int = 128
    momentum: float = MOMENTUM
    gamma: float = GAMMA
    drop_last: bool = True  # the official train loader's drop_last=True (eval_lr.py L108)
    # eval_lr.py: MultiStepLR [60, 80]; eval_lr_imagenet.py L144: CosineAnnealingLR(epochs), per epoch
    schedule: Literal["multistep", "cosine"] = "multistep"
    init_std: float | None = None  # None: nn.Linear's uniform init; eval_lr_imagenet.py L141: N(0, 0.01), bias 0

    @property
    def milestones(self) -> list[int]:
        return [round(f * self.epochs) for f in MILESTONES] if self.schedule == "multistep" else []

    def lr_at(self, epoch: int) -> float:
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    @classmethod
    def from_config(cls, section: ProbeSection) -> LinearParams:
        return cls(epochs=section.epochs, lr=section.lr, batch_size=section.batch_size, drop_last=section.drop_last)


Inputs = Tensor | Callable[[int], Tensor]  # fixed features, or epoch -> that epoch's (augmented) features


def fit_linear(
    x: Inputs,
    y: Tensor,
    pools: Tensor,
    seeds: list[int],
    n_classes: int,
    params: LinearParams,
    evals: list[tuple[Tensor, Tensor]],
    on_epoch: Callable[[], None] | None = None,
) -> list[Tensor]:
    """Train one linear classifier per row of `pools` (indices into x; equal lengths) at once.

    Model s uses seeds[s] for its initialisation (nn.Linear's U(-1/sqrt(D), 1/sqrt(D)) for weight
    and bias) and its per-epoch shuffles (drawn on the CPU, so every device sees the same batches);
    with params.drop_last (the official loader) the last partial batch of an epoch is skipped, so a pool
    smaller than one batch trains nothing, as there; otherwise it is a smaller last step.
    `evals` are (features (n, D) or (S, n, D), labels (n,)
    or (S, n)); returns, for each, the accuracy in percent after every epoch, (S, epochs), on the CPU.

    The bias is a weight on a constant-1 feature, and the step is written out by hand: with
    g = (softmax - onehot) / B the cross-entropy gradient of the logits, torch.optim.SGD (momentum,
    no dampening) does buf = m * buf + g^T x; w -= lr * buf. That is three kernels per step instead
    of autograd's dozens, which is what makes 100 epochs take seconds on a CPU.
    """
    device = y.device
    n_models, pool_size = pools.shape
    dim = evals[0][0].shape[-1]
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    weight = torch.stack([_initial_weight(n_classes, dim, params.init_std, g) for g in generators]).to(device)
    momentum = torch.zeros_like(weight)

    def with_bias(features: Tensor) -> Tensor:
        return torch.cat([features, torch.ones(len(features), 1, device=device, dtype=features.dtype)], dim=1)

    fixed = with_bias(x) if isinstance(x, Tensor) else None
    evals = [
        (torch.cat([ex, torch.ones(*ex.shape[:-1], 1, device=device, dtype=ex.dtype)], -1), ey) for ex, ey in evals
    ]
    minus_one = torch.full((n_models, 1, params.batch_size), -1.0, device=device)
    pools = pools.to(device)
    history = [torch.empty(n_models, params.epochs, device=device) for _ in evals]
    with one_cpu_thread(device):
        for epoch in range(params.epochs):
            lr = params.lr_at(epoch)
            xe = fixed if fixed is not None else with_bias(x(epoch).to(device))  # type: ignore[operator]
            order = torch.stack([torch.randperm(pool_size, generator=g) for g in generators]).to(device)
            epoch_index = pools.gather(1, order)
            end = pool_size - pool_size % params.batch_size if params.drop_last else pool_size
            for start in range(0, end, params.batch_size):
                index = epoch_index[:, start : start + params.batch_size]
                size = index.shape[1]
                xb = xe.index_select(0, index.flatten()).view(n_models, size, -1)  # (S, B, D + 1)
                yb = y.index_select(0, index.flatten()).view(n_models, 1, size)
                grad = torch.bmm(weight, xb.transpose(1, 2)).softmax(1)  # (S, C, B): classes along dim 1
                grad.scatter_add_(1, yb, minus_one[:, :, :size])
                torch.baddbmm(momentum, grad, xb, beta=params.momentum, alpha=1 / size, out=momentum)
                weight.sub_(momentum, alpha=lr)
            for (ex, ey), acc in zip(evals, history):
                predicted = torch.matmul(weight, ex.transpose(-1, -2)).argmax(1)  # (S, C, n) -> (S, n)
                acc[:, epoch] = (predicted == ey).float().mean(-1) * 100
            if on_epoch is not None:
                on_epoch()
    return [acc.cpu() for acc in history]


def _initial_weight(n_classes: int, dim: int, std: float | None, generator: torch.Generator) -> Tensor:
    """(classes, dim + 1), the bias last: nn.Linear's U(-1/sqrt(D), 1/sqrt(D)), or N(0, std) and bias 0."""
    if std is None:
        return (torch.rand(n_classes, dim + 1, generator=generator) * 2 - 1) / math.sqrt(dim)
    weight = torch.randn(n_classes, dim, generator=generator) * std
    return torch.cat([weight, torch.zeros(n_classes, 1)], dim=1)


def linear_probe(
    train_x: Inputs,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    seeds: list[int],
    params: LinearParams,
    n_classes: int | None = None,
    on_epoch: Callable[[], None] | None = None,
    val_x: Tensor | None = None,
) -> dict[str, Summary]:
    """{"acc_best_test": summary, "acc_val_selected": summary} over seeds (see the module docstring).
    `on_epoch` is called after every epoch of each of its two fits (2 x params.epochs calls).
    train_x may be a function epoch -> features (the ImageNet recipe's augmented epochs); then val_x, the
    train split's un-augmented features, is what the held-out 10% are scored on."""
    n_classes = n_classes or int(max(train_y.max(), test_y.max())) + 1
    n = train_y.shape[0]
    clean = val_x if val_x is not None else train_x
    if not isinstance(clean, Tensor):
        raise ValueError("augmented train features need val_x, the un-augmented ones")
    everything = torch.arange(n).expand(len(seeds), n)
    (paper_test,) = fit_linear(train_x, train_y, everything, seeds, n_classes, params, [(test_x, test_y)], on_epoch)
    splits = [val_split(n, seed) for seed in seeds]
    fit_index = torch.stack([fit for fit, _ in splits])
    val_index = torch.stack([val for _, val in splits]).to(train_y.device)
    val_acc, honest_test = fit_linear(
        train_x,
        train_y,
        fit_index,
        seeds,
        n_classes,
        params,
        [(clean[val_index], train_y[val_index]), (test_x, test_y)],
        on_epoch,
    )
    chosen = val_acc.argmax(1, keepdim=True)  # first maximum: the earliest best epoch
    return {
        "acc_best_test": summary(paper_test.max(1).values.tolist()),
        "acc_val_selected": summary(honest_test.gather(1, chosen).flatten().tolist()),
    }
