"""Every loss against a hand computation on a tiny tensor (explicit loops, Python floats)."""

import math

import pytest
import torch

from mimcli.objectives.contrastive import barlow_twins_loss, byol_loss, byol_symmetric_loss, cross_entropy, nt_xent
from mimcli.objectives.information import lbe_bound, mse_between_views, reconstruction_loss
from mimcli.objectives.precision import loss_precision


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
    assert z.grad is None
    assert p.grad is not None


def test_byol_symmetric_loss_sums_the_two_directions():
    """Official BYOL/main.py: `(regression_loss(pred_i, tar_j) + regression_loss(pred_j, tar_i)).mean()`."""
    p1, p2 = [[1.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [2.0, -1.0]]
    t1, t2 = [[3.0, 1.0], [0.0, 2.0]], [[0.0, 3.0], [2.0, 0.0]]

    def cos_loss(p, t):  # 2 - 2 cos, per sample
        return 2 - 2 * sum(a * b for a, b in zip(p, t)) / math.sqrt(sum(a * a for a in p) * sum(b * b for b in t))

    expected = sum(cos_loss(p1[i], t2[i]) + cos_loss(p2[i], t1[i]) for i in range(2)) / 2
    value = byol_symmetric_loss(*(torch.tensor(x, dtype=torch.float64) for x in (p1, p2, t1, t2)))
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_losses_compute_in_fp32_outside_autocast_and_keep_float64():
    z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
    exact = nt_xent(z1, z2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = nt_xent(z1.bfloat16(), z2.bfloat16())
        with loss_precision("autocast"):
            fast = nt_xent(z1, z2)
    assert inside.dtype == torch.float32
    assert exact.dtype == torch.float32
    # inputs rounded to bf16, then an fp32 loss: equal to the fp32 loss of the rounded inputs
    assert inside.item() == nt_xent(z1.bfloat16().float(), z2.bfloat16().float()).item()
    assert fast.dtype == torch.float32
    assert fast.item() != exact.item()  # bf16 matmul under the option
    assert barlow_twins_loss(z1.double(), z2.double()).dtype == torch.float64
    assert lbe_bound(z1.double(), z2.double()).dtype == torch.float64


def test_barlow_twins_matches_hand_computation():
    z1 = [[1.0, 2.0], [3.0, 1.0], [0.5, -1.0]]
    z2 = [[2.0, 1.0], [1.0, 1.5], [-1.0, 0.5]]
    w = 0.01

    def standardise(rows):
        rows = _normalise(rows)
        n, d = len(rows), len(rows[0])
        means = [sum(r[k] for r in rows) / n for k in range(d)]
        # unbiased std, as the official BarTwins/main.py's `Z.std(0)` (torch.std)
        stds = [math.sqrt(sum((r[k] - means[k]) ** 2 for r in rows) / (n - 1)) for k in range(d)]
        return [[(r[k] - means[k]) / stds[k] for k in range(d)] for r in rows]

    a, b = standardise(z1), standardise(z2)
    c = [[sum(a[n][i] * b[n][j] for n in range(3)) / 3 for j in range(2)] for i in range(2)]
    off_diagonal = sum(c[i][j] ** 2 for i in range(2) for j in range(2) if i != j)
    expected = sum((1 - c[i][i]) ** 2 for i in range(2)) + w * off_diagonal
    value = barlow_twins_loss(torch.tensor(z1, dtype=torch.float64), torch.tensor(z2, dtype=torch.float64), w)
    assert value.item() == pytest.approx(expected, rel=1e-12)


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
    """Official mi_estimators.InfoNCE(mu, z): score[k, l] = -||z_k - mu_l||^2 / 20, logsumexp over l
    (the clean means), mean over k (the noisy anchors)."""
    clean = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]
    noisy = [[0.1, 0.0], [1.0, -0.2], [0.0, 2.5]]
    rho = 1 / 20
    total = 0.0
    for z_k in noisy:
        total += math.log(sum(math.exp(-rho * sum((a - b) ** 2 for a, b in zip(z_k, mu_l))) for mu_l in clean))
    expected = -total / 3
    value = lbe_bound(torch.tensor(noisy, dtype=torch.float64), torch.tensor(clean, dtype=torch.float64), rho)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    swapped = lbe_bound(torch.tensor(clean, dtype=torch.float64), torch.tensor(noisy, dtype=torch.float64), rho)
    assert abs(swapped.item() - expected) > 1e-4  # the anchoring matters: the other way is another number


def test_lbe_bound_grows_when_points_spread():
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]])
    assert lbe_bound(points * 10, points * 10) > lbe_bound(points, points)


def test_mse_between_views_is_element_mean():
    features = torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 0.0], [2.0, 2.0]])  # views: rows 0-1 and 2-3
    expected = ((0**2 + 2**2) + (2**2 + 2**2)) / 4
    assert mse_between_views(features, 2).item() == pytest.approx(expected)


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_lbe_bound_value_and_gradient_equal_the_official_broadcast_form(scale):
    """mi_estimators.InfoNCE(mu, z) subtracts every pair explicitly; lbe_bound uses cdist, whose matrix-product
    path (batches over 25 rows) could lose precision. At a training batch's size (2N = 256, 128 dims) and
    feature scales where the term has a gradient (scale 0.5: mean squared distance ~64, the quickstart's
    layer4 at init; 1.0: ~256), the value and the gradient into the clean means must agree."""
    torch.manual_seed(0)
    clean = (scale * torch.randn(256, 128)).requires_grad_()
    z = clean + 0.1 * torch.randn(256, 128)
    ours = lbe_bound(z, clean)
    official = -(-((z.unsqueeze(1) - clean.unsqueeze(0)) ** 2).sum(-1) / 20.0).logsumexp(dim=1).mean()
    assert ours.item() == pytest.approx(official.item(), rel=1e-5)
    (g_ours,) = torch.autograd.grad(ours, clean)
    (g_official,) = torch.autograd.grad(official, clean)
    # 1e-3: at scale 1 the gradient is ~3e-4 and cdist's matrix product (fp32) is off by ~7e-5 of it
    assert (g_ours - g_official).norm() <= 1e-3 * g_official.norm()
