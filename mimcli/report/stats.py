"""Spread over training seeds: mean +- std, a 95 % t-interval of one row's mean (the figures' error
bars) and a 95 % Welch t-interval for a difference of two rows (the verdicts).

Pure functions on lists of floats (standard library only; scipy is not a dependency). The Student t
quantile is computed, not tabulated: the t CDF is the regularised incomplete beta function
I_x(df/2, 1/2) with x = df / (df + t^2) (Abramowitz & Stegun 26.7.1), evaluated with Lentz's
continued fraction (Numerical Recipes, 3rd ed., section 6.4, `betacf`), and inverted by bisection.
Welch's interval (Welch 1947) does not assume equal variances; its degrees of freedom come from the
Welch-Satterthwaite equation and need not be whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LEVEL = 0.95


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def std(values: list[float]) -> float:
    """Sample standard deviation (n - 1 in the denominator); 0 for fewer than two values."""
    n = len(values)
    if n < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes `betacf`)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df > 0 degrees of freedom."""
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with t_cdf(t, df) = p, for 0 < p < 1 (bisection to machine precision)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def mean_half_width(values: list[float], level: float = LEVEL) -> float | None:
    """Half-width of the `level` t-interval of the mean: t(n - 1) quantile x std / sqrt(n); None for n < 2.

    The one-sample counterpart of `welch_interval`, so an error bar and a verdict use one rule."""
    n = len(values)
    if n < 2:
        return None
    return t_quantile(0.5 + level / 2.0, n - 1) * std(values) / math.sqrt(n)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with a Welch t-interval; `low`/`high` are None when either side has n < 2."""

    estimate: float
    low: float | None
    high: float | None
    df: float | None
    level: float = LEVEL

    @property
    def known(self) -> bool:
        return self.low is not None

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def text(self, digits: int) -> str:
        if self.low is None or self.high is None:
            return f"{self.estimate:+.{digits}f} (no interval: n = 1)"
        return f"{self.estimate:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def welch_interval(a: list[float], b: list[float], level: float = LEVEL) -> Difference:
    """Difference of means a - b with its `level` Welch t-interval (unequal variances).

    With identical values on both sides (zero spread) the interval collapses to the estimate.
    """
    estimate = mean(a) - mean(b)
    if len(a) < 2 or len(b) < 2:
        return Difference(estimate, None, None, None, level)
    va, vb = std(a) ** 2 / len(a), std(b) ** 2 / len(b)
    se2 = va + vb
    if se2 == 0.0:
        return Difference(estimate, estimate, estimate, math.inf, level)
    df = se2 * se2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))
    half = t_quantile(0.5 + level / 2.0, df) * math.sqrt(se2)
    return Difference(estimate, estimate - half, estimate + half, df, level)
