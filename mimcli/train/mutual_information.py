"""Mutual-information estimators for batches of representations, as pure functions (results in nats).

Three families, chosen for what an information-plane diagnostic needs (docs/information.md says why):

- `infonce`: the InfoNCE lower bound (van den Oord et al. 2018) for a given N x N score matrix,
  log N + mean_i [s_ii - logsumexp_j s_ij]; with a *fixed* critic (`cosine_scores`) it is cheap
  and never exceeds log N, so it saturates for strongly dependent pairs.
- `ksg`: Kraskov, Stoegbauer and Grassberger's (2004) k-nearest-neighbour estimator, their
  algorithm 1: psi(k) + psi(N) - < psi(n_x + 1) + psi(n_y + 1) >, with the max of the two
  marginal distances as the joint distance. Consistent, nearly unbiased in low dimension, biased
  towards 0 in high dimension.
- `renyi_mutual_information`: the matrix-based Renyi alpha-entropy of Sanchez Giraldo, Rao and
  Principe (2014), I_a(A; B) = S_a(A) + S_a(B) - S_a(A o B / tr(A o B)), with S_a the Renyi
  entropy of the eigenvalues of a trace-normalised Gram matrix (Yu et al. use it for information
  planes of deep networks). Needs no density, works for any dimension and for discrete labels
  (`label_gram`), and is a few eigendecompositions of N x N matrices.

Floors and intervals (docs/information.md): `shuffled` pairs z with permuted labels, which keeps
both marginals and removes the dependence, so the same estimator on it is the value that dependence
must exceed; `resampled_interval` turns estimates on batches drawn with replacement into an interval
around the point estimate.

Everything is computed in float64 on the inputs' device, so results do not depend on the CPU's
fp32 / bf16 paths.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

# ------------------------------------------------------------------------------------------- InfoNCE


def cosine_scores(x: Tensor, y: Tensor, temperature: float = 0.1) -> Tensor:
    """Fixed critic s_ij = cos(x_i - mean x, y_j - mean y) / temperature (centring makes ReLU features usable)."""
    x, y = x.double(), y.double()
    x = F.normalize(x - x.mean(0), dim=1)
    y = F.normalize(y - y.mean(0), dim=1)
    return x @ y.T / temperature


def infonce(scores: Tensor) -> Tensor:
    """InfoNCE bound from an N x N score matrix (row i: the positive on the diagonal), symmetrised over rows/columns."""
    scores = scores.double()
    n = scores.shape[0]
    diagonal = scores.diagonal()
    rows = (diagonal - torch.logsumexp(scores, dim=1)).mean()
    columns = (diagonal - torch.logsumexp(scores, dim=0)).mean()
    return math.log(n) + (rows + columns) / 2


# ------------------------------------------------------------------------------------------- KSG


def ksg(x: Tensor, y: Tensor, k: int = 3) -> Tensor:
    """KSG estimator 1 of I(X; Y) from paired samples x (N, dx), y (N, dy); Euclidean distance within each space."""
    x, y = x.double().reshape(len(x), -1), y.double().reshape(len(y), -1)
    n = x.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, N - 1], got k={k} for N={n}")
    dx, dy = torch.cdist(x, x), torch.cdist(y, y)
    joint = torch.maximum(dx, dy)
    joint.fill_diagonal_(math.inf)
    epsilon = joint.kthvalue(k, dim=1, keepdim=True).values  # distance to the k-th neighbour in the joint space
    # strictly closer than epsilon in each marginal space, the point itself excluded
    n_x = (dx < epsilon).sum(1) - 1
    n_y = (dy < epsilon).sum(1) - 1
    digamma = torch.special.digamma
    estimate: Tensor = (
        digamma(torch.tensor(float(k), dtype=torch.float64))
        + digamma(torch.tensor(float(n), dtype=torch.float64))
        - (digamma(n_x.double() + 1) + digamma(n_y.double() + 1)).mean()
    )
    return estimate


# ------------------------------------------------------------------------------------------- Renyi


def kernel_width(x: Tensor) -> float:
    """The root-mean-square pairwise distance sqrt(2 tr Cov(x)): scale-free, so every method's features compare.

    Silverman's N^(-1/(4+d)) factor is left out on purpose: it is tuned for density estimates, and
    with it the Gram matrices of low-dimensional data approach the identity, which makes every pair
    look dependent (docs/information.md has the measurement).
    """
    x = x.double().reshape(len(x), -1)
    return max(math.sqrt(2 * x.var(0, unbiased=True).sum().item()), 1e-12)


def gaussian_gram(x: Tensor, width: float | None = None) -> Tensor:
    """exp(-||x_i - x_j||^2 / (2 width^2)) on rows of x (N, ...), width from `kernel_width` unless given."""
    x = x.double().reshape(len(x), -1)
    width = kernel_width(x) if width is None else width
    distances = torch.cdist(x, x).pow(2)
    return torch.exp(-distances / (2 * width**2))


def label_gram(labels: Tensor) -> Tensor:
    """Delta kernel [y_i == y_j] for discrete labels (its entropy is the Renyi entropy of the class frequencies)."""
    labels = labels.reshape(len(labels), -1)
    return (labels.unsqueeze(1) == labels.unsqueeze(0)).all(-1).double()


def renyi_entropy(gram: Tensor, alpha: float = 1.01) -> Tensor:
    """Matrix-based Renyi alpha-entropy (nats) of a Gram matrix with a positive diagonal."""
    gram = gram.double()
    scale = gram.diagonal().rsqrt()
    normalised = gram * scale.unsqueeze(0) * scale.unsqueeze(1)
    normalised = normalised / normalised.trace()
    eigenvalues = torch.linalg.eigvalsh(normalised).clamp(min=0)
    return torch.log((eigenvalues**alpha).sum()) / (1 - alpha)


def renyi_mutual_information(gram_a: Tensor, gram_b: Tensor, alpha: float = 1.01) -> Tensor:
    """I_a(A; B) = S_a(A) + S_a(B) - S_a(A o B), the joint Gram matrix being the Hadamard product."""
    return renyi_entropy(gram_a, alpha) + renyi_entropy(gram_b, alpha) - renyi_entropy(gram_a * gram_b, alpha)


def gaussian_mutual_information(rho: float, dims: int) -> float:
    """Closed form for d independent pairs of unit Gaussians with correlation rho: -d/2 log(1 - rho^2)."""
    return 0.0 - dims / 2 * math.log(1 - rho**2)  # 0.0 - : no negative zero


def correlated_gaussians(n: int, dims: int, rho: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n samples of (x, y), x, y in R^dims, corr(x_k, y_k) = rho, independent across k (float64)."""
    x = torch.randn(n, dims, generator=generator, dtype=torch.float64)
    noise = torch.randn(n, dims, generator=generator, dtype=torch.float64)
    return x, rho * x + math.sqrt(1 - rho**2) * noise


# ------------------------------------------------------------------------------------------- floors, intervals


def shuffled(target: Tensor, generator: torch.Generator) -> Tensor:
    """`target`'s rows permuted (CPU generator): the pairing with z broken, each marginal kept."""
    return target[torch.randperm(len(target), generator=generator).to(target.device)]


def resample_indices(n: int, resamples: int, generator: torch.Generator) -> list[Tensor]:
    """`resamples` bootstrap batches: n indices drawn with replacement each (CPU generator)."""
    return [torch.randint(n, (n,), generator=generator) for _ in range(resamples)]


def resampled_interval(point: float, estimates: list[float], level: float = 0.95) -> tuple[float, float]:
    """The point estimate plus the `level` quantiles of the resampled estimates' deviations from their mean.

    A resample repeats some items, which shifts a kernel estimate (fewer distinct items: another
    spectrum), so the resampled values are used for their spread only, centred on their own mean."""
    values = torch.tensor(estimates, dtype=torch.float64)
    deviations = values - values.mean()
    probabilities = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(deviations, probabilities).tolist()
    return point + low, point + high
