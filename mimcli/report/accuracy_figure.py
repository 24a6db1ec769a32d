"""accuracy-<source>: one panel per probed task (every column of the accuracy table), one bar per row.

A bar is the mean over the row's training seeds; its error bar is the 95 % t-interval of that mean
(n >= 2) and each seed's value is a dot on it. A row with one run is hatched and has no error bar.
The bar's colour is its row's (plots.Style), the colour that model has in every figure of the report."""

from __future__ import annotations

from typing import Any

from mimcli.report.cells import AccuracyTable, Cell
from mimcli.report.naming import safe_name
from mimcli.report.plots import (
    INTERVAL,
    SINGLE,
    Drawn,
    Style,
    axis_label,
    chance,
    new_figure,
    panel_grid,
    panel_title,
    shared_legend,
)
from mimcli.report.stats import mean_half_width


def draw_bar(axes: Any, index: int, cell: Cell, colour: Any) -> None:
    """The mean as a bar, its interval as an error bar (n >= 2), every seed as a dot."""
    half = mean_half_width(cell.values)
    axes.bar(
        index,
        cell.mean,
        0.8,
        color=colour,
        edgecolor="black",
        linewidth=0.5,
        hatch="///" if half is None else None,
        yerr=half,
        capsize=3,
    )
    axes.plot([index] * len(cell.values), cell.values, "o", color="black", markersize=2.5, zorder=3)


def accuracy_figure(table: AccuracyTable, metric: str, style: Style) -> Drawn | None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if not table.columns:
        return None
    figure = new_figure(len(table.columns), height=3.2)
    axes = panel_grid(figure, len(table.columns))
    any_single = any_chance = False
    for ax, column in zip(axes, table.columns):
        for index, row in enumerate(table.rows):
            cell = row.cells.get(column.key)
            if cell is not None:
                draw_bar(ax, index, cell, style.colour(row.label))
                any_single |= len(cell.values) < 2
        level = chance(column)
        if level is not None:
            ax.axhline(level, color="black", linestyle=":", linewidth=1)
            any_chance = True
        ax.set_xticks([])
        ax.set(ylabel=axis_label(column, metric), title=panel_title(column))
    extra: list[tuple[Any, str]] = [
        (Patch(facecolor=style.colour(row.label), edgecolor="black", linewidth=0.5), row.label) for row in table.rows
    ]
    extra.append((Line2D([], [], color="black", marker="o", markersize=2.5, linestyle="-"), INTERVAL))
    if any_single:
        extra.append((Patch(facecolor="white", edgecolor="black", hatch="///"), f"hatched: {SINGLE}"))
    if any_chance:
        extra.append((Line2D([], [], color="black", linestyle=":"), "chance"))
    shared_legend(figure, axes, extra)
    title = f"Linear probe per model: {table.title}"
    figure.suptitle(f"{title}\nbar: mean over training seeds; colour: model")
    return Drawn(f"accuracy-{safe_name(table.source)}", title, figure)
