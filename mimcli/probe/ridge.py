"""The regression probe: closed-form ridge with an intercept, alpha chosen on a seeded validation split."""

from __future__ import annotations

import torch
from torch import Tensor

from mimcli.probe.records import Summary
from mimcli.probe.stats import one_cpu_thread, summary, val_split

RIDGE_GRID = tuple(10.0**e for e in range(-6, 3))  # alpha / mean eigenvalue
RIDGE_SELECTION = (
    "alpha = a * mean eigenvalue of the centred train Gram matrix, a in 1e-6..1e2 chosen by MSE on a "
    "seeded 10% validation split, then refit on the whole train split; r2 averaged over target dims"
)


class Ridge:
    """Closed-form ridge with an unpenalised intercept, solved for many alphas via one eigendecomposition."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        x, y = x.double(), y.double().reshape(len(y), -1)
        self.x_mean, self.y_mean = x.mean(0), y.mean(0)
        xc = x - self.x_mean
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(xc.T @ xc)
        self.projected = self.eigenvectors.T @ (xc.T @ (y - self.y_mean))
        self.scale = self.eigenvalues.clamp_min(0).mean().item() or 1.0

    def predict(self, x: Tensor, relative_alpha: float) -> Tensor:
        shrink = 1 / (self.eigenvalues.clamp_min(0) + relative_alpha * self.scale)
        coef = self.eigenvectors @ (self.projected * shrink.unsqueeze(1))
        prediction: Tensor = (x.double() - self.x_mean) @ coef + self.y_mean
        return prediction


def r2_score(y: Tensor, predicted: Tensor) -> float:
    """R^2 per target dimension, averaged (sklearn's 'uniform_average')."""
    y = y.double().reshape(len(y), -1)
    residual = (y - predicted).square().sum(0)
    total = (y - y.mean(0)).square().sum(0).clamp_min(1e-12)
    return (1 - residual / total).mean().item()


def regression_probe(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seeds: list[int]
) -> dict[str, Summary]:
    """{"r2", "mse"} on the test split; alpha chosen per seed on a seeded 10% validation split."""
    test_target = test_y.double().reshape(len(test_y), -1)
    r2s, mses = [], []
    with one_cpu_thread(train_x.device):
        full = Ridge(train_x, train_y)
        for seed in seeds:
            fit, val = val_split(train_x.shape[0], seed)
            ridge = Ridge(train_x[fit], train_y[fit])
            val_target = train_y[val].double().reshape(len(val), -1)
            errors = [(ridge.predict(train_x[val], a) - val_target).square().mean().item() for a in RIDGE_GRID]
            best = RIDGE_GRID[min(range(len(errors)), key=errors.__getitem__)]
            predicted = full.predict(test_x, best)
            mses.append((predicted - test_target).square().mean().item())
            r2s.append(r2_score(test_target, predicted))
    return {"r2": summary(r2s), "mse": summary(mses)}
