"""Every loss against a hand computation on a tiny tensor (explicit loops, Python floats)."""

import math

import pytest
import torch

from mimcli.objectives.contrastive import barlow_twins_loss, byol_loss, cross_entropy, nt_xent
from mimcli.objectives.information import lbe_bound, mse_between_views, reconstruction_loss


def _normalise(rows):
    return [[x / math.sqrt(sum(v * v for v in row)) for x in row] for row in rows]


def test_nt_xent_matches_hand_computation():
    z1 = [[1.0, 0.0], [1.0, 1.0]]
    z2 = [[2.0, 0.5], [0.0, 1.0]]
    t = 0.5
    z = _normalise(z1 + z2)
    n = 2
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        sims = {j: sum(a * b for a, b in zip(z[i], z[j])) / t for j in range(2 * n) if j != i}
        total += -sims[positive] + math.log(sum(math.exp(s) for s in sims.values()))
    expected = total / (2 * n)
    assert nt_xent(torch.tensor(z1), torch.tensor(z2), t).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_perfect_alignment_is_lower():
    z = torch.eye(4)
    aligned = nt_xent(z, z, 0.5)
    shuffled = nt_xent(z, z.roll(1, 0), 0.5)
    assert aligned < shuffled


def test_byol_loss_is_two_minus_two_cosine():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[0.0, 3.0], [2.0, 0.0]])
    expected = ((2 - 0) + (2 - 2 / math.sqrt(2))) / 2
    assert byol_loss(p, z).item() == pytest.approx(expected, rel=1e-6)


def test_byol_loss_sends_no_gradient_to_target():
    p = torch.randn(4, 3, requires_grad=True)
    z = torch.randn(4, 3, requires_grad=True)
    byol_loss(p, z).backward()
    assert z.grad is None and p.grad is not None


def test_barlow_twins_matches_hand_computation():
    z1 = [[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]]
    z2 = [[2.0, 1.0], [1.0, 1.5], [-1.0, 0.5]]
    w = 0.01

    def standardise(rows):
        rows = _normalise(rows)
        n, d = len(rows), len(rows[0])
        means = [sum(r[k] for r in rows) / n for k in range(d)]
        stds = [math.sqrt(sum((r[k] - means[k]) ** 2 for r in rows) / n) for k in range(d)]
        return [[(r[k] - means[k]) / stds[k] for k in range(d)] for r in rows]

    a, b = standardise(z1), standardise(z2)
    c = [[sum(a[n][i] * b[n][j] for n in range(3)) / 3 for j in range(2)] for i in range(2)]
    expected = sum((1 - c[i][i]) ** 2 for i in range(2)) + w * sum(c[i][j] ** 2 for i in range(2) for j in range(2) if i != j)
    assert barlow_twins_loss(torch.tensor(z1), torch.tensor(z2), w).item() == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    expected = -2.0 + math.log(math.exp(2) + 1 + math.exp(-1))
    assert cross_entropy(logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


def test_reconstruction_loss_is_mean_mse_per_view_summed():
    target = torch.arange(8.0).view(2, 1, 2, 2)  # view 1 = image 0, view 2 = image 1
    reconstruction = target + torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
    # view 1 errors are all 1 -> mse 1; view 2 errors all 2 -> mse 4
    assert reconstruction_loss(reconstruction, target, n_views=2).item() == pytest.approx(5.0)


def test_lbe_bound_on_three_points():
    clean = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]
    noisy = [[0.1, 0.0], [1.0, -0.2], [0.0, 2.5]]
    rho = 0.05
    total = 0.0
    for f_k in clean:
        total += math.log(sum(math.exp(-rho * sum((a - b) ** 2 for a, b in zip(z_l, f_k))) for z_l in noisy))
    expected = -total / 3
    assert lbe_bound(torch.tensor(noisy), torch.tensor(clean), rho).item() == pytest.approx(expected, rel=1e-6)


def test_lbe_bound_grows_when_points_spread():
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]])
    assert lbe_bound(points * 10, points * 10) > lbe_bound(points, points)


def test_mse_between_views_is_element_mean():
    features = torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 0.0], [2.0, 2.0]])  # views: rows 0-1 and 2-3
    expected = ((0 ** 2 + 2 ** 2) + (2 ** 2 + 2 ** 2)) / 4
    assert mse_between_views(features, 2).item() == pytest.approx(expected)
