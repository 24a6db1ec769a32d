"""Seed statistics of the report (mimcli/report/stats.py, spread.py) against hand computations."""

from __future__ import annotations

import math

import pytest

from mimcli.report.stats import incomplete_beta, std, t_cdf, t_quantile, welch_interval


@pytest.mark.parametrize(
    "df, expected",
    [
        # two-sided 95 % critical values, NIST/SEMATECH e-Handbook of Statistical Methods, table 1.3.6.7.2
        (1, 12.706),
        (2, 4.303),
        (3, 3.182),
        (4, 2.776),
        (5, 2.571),
        (10, 2.228),
        (30, 2.042),
        (100, 1.984),
    ],
)
def test_t_quantile_matches_the_published_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-4)


def test_t_cdf_closed_forms():
    # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t) / pi
    for t in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    # df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-2.0, 0.3, 5.0):
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    # I_x(1, 1) = x and I_x(a, 1) = x^a
    assert incomplete_beta(1.0, 1.0, 0.3) == pytest.approx(0.3, abs=1e-12)
    assert incomplete_beta(2.5, 1.0, 0.6) == pytest.approx(0.6**2.5, abs=1e-12)


def test_welch_interval_by_hand():
    # a: mean 2, var 1; b: mean 6, var 4; se^2 = 1/3 + 4/3 = 5/3
    # df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = 50/17; t_0.975(50/17) by the closed form's neighbour
    d = welch_interval([1.0, 2.0, 3.0], [4.0, 6.0, 8.0])
    assert d.estimate == pytest.approx(-4.0)
    assert d.df == pytest.approx(50 / 17)
    half = t_quantile(0.975, 50 / 17) * math.sqrt(5 / 3)
    assert (d.low, d.high) == (pytest.approx(-4.0 - half), pytest.approx(-4.0 + half))
    # the quantile lies between the tabulated df = 2 and df = 3 values
    assert 3.182 < t_quantile(0.975, 50 / 17) < 4.303
    assert not d.excludes_zero
    assert d.text(1) == f"-4.0 [{-4.0 - half:+.1f}, {-4.0 + half:+.1f}]"


def test_welch_equal_sizes_equal_variances_is_the_pooled_t_interval():
    # n = 3 each, both variances 1: df = 4, se = sqrt(2/3); t_0.975(4) = 2.776445
    d = welch_interval([10.0, 11.0, 12.0], [5.0, 6.0, 7.0])
    assert d.df == pytest.approx(4.0)
    assert d.low == pytest.approx(5.0 - 2.776445 * math.sqrt(2 / 3), abs=1e-5)
    assert d.excludes_zero


def test_n_one_has_no_interval_and_std_zero():
    d = welch_interval([3.0], [1.0, 2.0])
    assert d.estimate == pytest.approx(1.5)
    assert d.low is None
    assert not d.known
    assert d.text(2) == "+1.50 (no interval: n = 1)"
    assert std([4.0]) == 0.0
    assert std([1.0, 3.0]) == pytest.approx(math.sqrt(2.0))
    same = welch_interval([2.0, 2.0], [1.0, 1.0])
    assert (same.low, same.high) == (1.0, 1.0)


def test_spread_lines_compare_each_regularised_row_with_its_baseline():
    from types import SimpleNamespace as NS

    from mimcli.report.cells import Cell, Column
    from mimcli.report.spread import spread_lines

    def row(label: str, kind: str, values: list[float], settings: dict, foreign: bool = False) -> NS:
        config = NS(regularizer=NS(kind=kind), method=NS(name="simclr"))
        group = NS(config=config, settings=settings, runs=[object()] * len(values), foreign=foreign, random_init=False)
        return NS(label=label, group=group, cells={"shapes:hue": Cell(values)})

    base = {"model.width": 16}
    table = NS(
        columns=[Column("shapes:hue", "classification", "source")],
        rows=[
            # a model mim did not train, with the same settings: never a baseline
            row("torchvision resnet18", "none", [50.0, 51.0, 52.0], base, foreign=True),
            row("SimCLR", "none", [10.0, 11.0, 12.0], base),
            row("SimCLR (w8)", "none", [0.0, 0.0, 0.0], {"model.width": 8}),
            row("SimCLR + RC", "rc", [15.0, 16.0, 17.0], {**base, "regularizer.kind": "rc"}),
            row("SimCLR + LBE", "lbe", [30.0], {**base, "regularizer.kind": "lbe"}),
        ],
    )
    lines = spread_lines(table)
    assert lines[0] == "n = 1 (no spread is known, no error bar drawn): SimCLR + LBE."
    # + RC vs SimCLR (same width, not the width-8 row): +5 with df 4, half-width 2.776445 * sqrt(2/3) = 2.2669
    assert lines[1] == (
        "SimCLR + RC - SimCLR (n 3 vs 3; 95% Welch t-interval over training seeds): shapes:hue +5.00 [+2.73, +7.27]."
    )
    assert lines[2] == (
        "SimCLR + LBE - SimCLR (n 1 vs 3; 95% Welch t-interval over training seeds): "
        "shapes:hue +19.00 (no interval: n = 1)."
    )
