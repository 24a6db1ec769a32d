"""lambda-/epochs-<source>: accuracy against lambda or pretraining epochs, one panel per task.

Each point is the mean over training seeds, with the 95 % t-interval of that mean (n >= 2) and each
seed's value as a small dot; a single run is drawn hollow. x ticks sit on the measured values only.
Against epochs, a line joins two points only when no epoch lies unmeasured between them: runs trained
for 0 and 2 epochs are two points, not a line through epoch 1. Against lambda the points are joined
(lambda is a continuous setting, drawn on a log axis)."""

from __future__ import annotations

import math
from typing import Any

from mimcli.report.cells import Cell, Column
from mimcli.report.constants import LAMBDA
from mimcli.report.naming import safe_name
from mimcli.report.plots import (
    INTERVAL,
    SINGLE,
    Drawn,
    Style,
    axis_label,
    chance,
    epoch_ticks,
    new_figure,
    panel_grid,
    panel_title,
    plot_measured,
    shared_legend,
)
from mimcli.report.stats import mean_half_width
from mimcli.report.sweeps import SweepTable

BASELINE_STYLES = ("--", "-.", (0, (5, 1)))
DODGE = 0.015  # sideways step between series, as a fraction of the axis span


def draw_point(axes: Any, x: float, cell: Cell, colour: Any) -> bool:
    """One mean with its interval and seed dots; True when it is a single run (drawn hollow)."""
    half = mean_half_width(cell.values)
    if half is None:
        axes.plot([x], [cell.mean], marker="o", markerfacecolor="white", color=colour, linestyle="")
        return True
    axes.errorbar([x], [cell.mean], yerr=[half], color=colour, marker="o", capsize=3, linestyle="")
    axes.plot([x] * len(cell.values), cell.values, ".", color=colour, markersize=3, alpha=0.6)
    return False


def axis_span(sweep: SweepTable) -> float:
    """The measured range: in decades of lambda (its positive values), in epochs otherwise."""
    xs = [p.x for s in sweep.series for p in s.points]
    if sweep.axis == LAMBDA:
        positive = [x for x in xs if x > 0]
        return math.log10(max(positive) / min(positive)) if positive else 1.0
    return max(xs) - min(xs)


def dodge(x: float, index: int, count: int, axis: str, span: float) -> float:
    """x moved sideways by a few percent of the axis so that series measured at one value do not hide each
    other (multiplicatively on the log lambda axis); the ticks stay on the measured values."""
    offset = (index - (count - 1) / 2) * DODGE
    if axis == LAMBDA:
        return x * 10.0 ** (offset * max(span, 1.0)) if x > 0 else x
    return x + offset * max(span, 1.0)


def draw_series(axes: Any, sweep: SweepTable, index: int, column: Column, colour: Any) -> bool:
    """The `index`-th series' points in one panel; True when one of them is a single run."""
    series = sweep.series[index]
    points = [p for p in series.points if column.key in p.row.cells]
    if not points:
        return False
    epochs = [p.x for p in points]
    xs = [dodge(x, index, len(sweep.series), sweep.axis, axis_span(sweep)) for x in epochs]
    means = [p.row.cells[column.key].mean for p in points]
    if sweep.axis == LAMBDA:
        axes.plot(xs, means, color=colour, label=series.label)
    else:
        plot_measured(axes, epochs, xs, means, series.label, color=colour)
    singles = [draw_point(axes, x, p.row.cells[column.key], colour) for x, p in zip(xs, points)]
    return any(singles)


def x_axis(axes: Any, sweep: SweepTable) -> None:
    """Scale and ticks: a log (or symlog, with 0) lambda axis; ticks on the measured values only."""
    xs = [p.x for s in sweep.series for p in s.points]
    if sweep.axis == LAMBDA:
        positive = [x for x in xs if x > 0]
        if min(xs) > 0:
            axes.set_xscale("log")
        elif positive:
            axes.set_xscale("symlog", linthresh=min(positive))
    epoch_ticks(axes, xs)
    axes.set_xlabel("λ" if sweep.axis == LAMBDA else "pretraining epochs")


def sweep_figure(sweep: SweepTable, metric: str, style: Style) -> Drawn:
    from matplotlib.lines import Line2D

    columns = sweep.table.columns
    figure = new_figure(len(columns), height=3.0)
    axes = panel_grid(figure, len(columns), sharex=True)
    any_single = any_chance = False
    for ax, column in zip(axes, columns):
        for index, series in enumerate(sweep.series):
            any_single |= draw_series(ax, sweep, index, column, style.series_colour(sweep, series))
        for line, row in zip(BASELINE_STYLES * len(sweep.baselines), sweep.baselines):
            if column.key in row.cells:
                ax.axhline(row.cells[column.key].mean, linestyle=line, color="grey", label=f"baseline: {row.label}")
        level = chance(column)
        if level is not None:
            ax.axhline(level, color="black", linestyle=":", linewidth=1)
            any_chance = True
        x_axis(ax, sweep)
        ax.set(ylabel=axis_label(column, metric), title=panel_title(column))
    extra: list[tuple[Any, str]] = [(Line2D([], [], color="black", marker="o", linestyle=""), INTERVAL)]
    if any_single:
        hollow = Line2D([], [], marker="o", markerfacecolor="white", color="black", linestyle="")
        extra.append((hollow, f"hollow: {SINGLE}"))
    if any_chance:
        extra.append((Line2D([], [], color="black", linestyle=":"), "chance"))
    shared_legend(figure, axes, extra)
    figure.suptitle(f"{sweep.title}\npoint: mean over training seeds; colour: model")
    axis = "lambda" if sweep.axis == LAMBDA else "epochs"
    return Drawn(f"{axis}-{safe_name(sweep.table.source)}", sweep.title, figure)
