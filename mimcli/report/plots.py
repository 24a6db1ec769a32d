"""What every report figure shares (the figures themselves: loss_figure, accuracy_figure, sweep_figure,
information_plots; figures.write_plots saves them all).

- One colour per model: a report's `Style` gives each table row label one colour, and every figure
  (bars, sweep lines, loss curves, information plane) colours a run by its row's label; a row's
  training seeds are told apart by marker, the same marker for the same seed in every figure.
- Error bars are 95 % t-intervals of the mean over training seeds (stats.mean_half_width, the rule
  the verdicts' Welch intervals use), drawn where n >= 2, and every seed's value is drawn as a dot;
  `INTERVAL` is what each figure's legend says about them.
- Epoch axes: ticks only on measured epochs, and a line joins two points only when no epoch lies
  unmeasured between them (two runs at 0 and 2 epochs are two points, not a line through epoch 1).
Chance level is drawn where it is known (classification with known classes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mimcli.config.datasets import dataset_record
from mimcli.report.cells import Column, Row
from mimcli.report.collect import Run
from mimcli.report.constants import EPOCHS, LAMBDA, MEAN
from mimcli.report.groups import distinguishing_labels
from mimcli.report.stats import LEVEL
from mimcli.report.sweeps import Series, SweepTable
from mimcli.report.tables import Report

LOSS_SKIP = ("epoch", "lr", "images_per_s", "seconds", "train_acc")
DPI = 200
LOSS_NAMES = {
    "loss": "total loss",
    "loss_method": "method loss",
    "loss_reg": "regulariser term",
    # the official LBE term: InfoNCE on I(z; v) without its log N and its positive term, so not a bound on I
    "mi_lbe": "LBE term: -mean log sum exp(-rho |z - f(v)|^2)",
}


INTERVAL = f"error bar: {LEVEL:.0%} t-interval of the mean\nover training seeds; dot: one seed"
SINGLE = "no error bar: a single run"
SEED_MARKERS = "osD^v<>phX*"
MOST_TICKS = 12
MIN_WIDTH = 7.5  # inches


@dataclass
class Drawn:
    """One figure before it is saved: its file stem, its title (the markdown's alt text) and the Figure."""

    name: str
    title: str
    figure: Any
    tight: bool = False  # saved with bbox_inches="tight" (figures whose legends sit outside the axes)


class Style:
    """A report's colours and markers: a run is drawn in its row's colour and its seed's marker.

    A model's colour comes from its label with lambda and epochs left out (its family: the label a sweep
    figure gives its series; a row not named after its model, such as random init, is its own), in table
    order: tab10 up to 10 families, tab20 beyond. Rows of one family
    that differ in lambda or epochs get shades of that colour, lightest first, the full colour last (the
    largest lambda / longest training). So a model has one colour in every figure of the report."""

    def __init__(self, report: Report) -> None:
        from matplotlib import colormaps

        rows = [row for table in report.tables for row in table.rows]
        self.rows: dict[int, Row] = {id(run): row for row in rows for run in row.group.runs}
        self.positions = {key: index for index, key in enumerate(self.rows)}  # table order, then seed
        family_of: dict[str, str] = {}  # row label -> family label
        for table in report.tables:
            items = [(row.group.model, row.group.settings) for row in table.rows]
            for row, family in zip(table.rows, distinguishing_labels(items, (LAMBDA, EPOCHS))):
                # a row named other than after its model (random init) is a model of its own
                family_of.setdefault(row.label, family if row.label.startswith(row.group.model) else row.label)
        families: dict[str, list[str]] = {}
        for label, family in family_of.items():
            families.setdefault(family, []).append(label)
        palette = colormaps["tab10" if len(families) <= 10 else "tab20"]
        self.family_colours = {family: palette(i % palette.N) for i, family in enumerate(families)}
        self.colours: dict[str, Any] = {
            label: shade(self.family_colours[family], index, len(members))
            for family, members in families.items()
            for index, label in enumerate(members)
        }
        self.family_of = family_of

    def series_colour(self, sweep: SweepTable, series: Series) -> Any:
        """A sweep series in its family's full colour; shades where two series of one sweep share a family."""
        family = self.family_of.get(series.points[-1].row.label)
        siblings = [s for s in sweep.series if self.family_of.get(s.points[-1].row.label) == family]
        if family is None:
            return "grey"
        return shade(self.family_colours[family], siblings.index(series), len(siblings))

    def colour(self, label: str) -> Any:
        return self.colours.get(label, "grey")

    def row(self, run: Run) -> Row | None:
        """The table row a run is pooled in; None for a run the table counted once as a repeated seed."""
        return self.rows.get(id(run))

    def order(self, runs: list[Run]) -> list[Run]:
        """`runs` in table order (rows as the tables list them, seeds ascending), so legends list them so."""
        return sorted(runs, key=lambda run: self.positions.get(id(run), len(self.positions)))

    def run_colour(self, run: Run) -> Any:
        row = self.row(run)
        return self.colour(row.label) if row else "grey"

    def run_marker(self, run: Run) -> str:
        row = self.row(run)
        return SEED_MARKERS[row.group.runs.index(run) % len(SEED_MARKERS)] if row else "o"

    def run_label(self, run: Run) -> str:
        """The row's label (the model, as the tables name it), with the seed where the row pools several."""
        row = self.row(run)
        if row is None:
            return run.model
        return row.label + (f", seed {run.config.train.seed}" if len(row.group.runs) > 1 else "")


def shade(colour: Any, index: int, count: int, lightest: float = 0.6) -> tuple[float, ...]:
    """The `index`-th of `count` shades of `colour`: mixed with white, the last one unmixed."""
    mix = lightest * (count - 1 - index) / (count - 1) if count > 1 else 0.0
    rgba = tuple(float(c) for c in colour)
    return (*(c + (1.0 - c) * mix for c in rgba[:3]), rgba[3] if len(rgba) > 3 else 1.0)


def tick_values(values: Iterable[float], most: int = MOST_TICKS) -> list[float]:
    """Measured values to tick: all of them, or every k-th (first and last kept) when there are more than `most`."""
    measured = sorted(set(values))
    if not measured:
        return []
    ticks = measured[:: math.ceil(len(measured) / most)]
    ticks[-1] = measured[-1]
    return ticks


def epoch_ticks(axes: Any, epochs: Iterable[float], most: int = MOST_TICKS) -> None:
    """x ticks on measured epochs only (tick_values), none between them."""
    ticks = tick_values(epochs, most)
    axes.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axes.set_xticks([], minor=True)


def segments(epochs: Sequence[float]) -> list[list[int]]:
    """Indices of `epochs` (ascending) split wherever an epoch lies unmeasured between two neighbours."""
    out: list[list[int]] = []
    for index, epoch in enumerate(epochs):
        if out and epoch - epochs[out[-1][-1]] <= 1:
            out[-1].append(index)
        else:
            out.append([index])
    return out


def plot_measured(
    axes: Any, epochs: Sequence[float], xs: Sequence[float], ys: Sequence[float], label: str, **style: Any
) -> None:
    """(xs, ys) measured at `epochs`: a marker at each, a line only between adjacent measured epochs."""
    for number, indices in enumerate(segments(epochs)):
        axes.plot([xs[i] for i in indices], [ys[i] for i in indices], label=label if number == 0 else None, **style)


def runs_over_epochs(axes: Any, curves: list[tuple[Run, list[tuple[float, float]]]], style: Style) -> None:
    """One line per run through its (epoch, value) points, in its model's colour with its seed's marker
    (markers left out beyond 20 points); x ticks on the measured epochs."""
    for run, curve in curves:
        epochs = [c[0] for c in curve]
        plot_measured(
            axes,
            epochs,
            epochs,
            [c[1] for c in curve],
            style.run_label(run),
            color=style.run_colour(run),
            marker=style.run_marker(run) if len(curve) <= 20 else None,
            markersize=3,
        )
    epoch_ticks(axes, [c[0] for _, curve in curves for c in curve])


def new_figure(panels: int, height: float = 3.0) -> Any:
    from matplotlib.figure import Figure

    cols = min(panels, 3)
    width = max(3.6 * cols + 0.6, MIN_WIDTH)  # room for the two-line title and the legend under one panel
    return Figure(figsize=(width, height * math.ceil(panels / cols) + 1.3), layout="constrained")


def axis_label(column: Column, metric: str) -> str:
    """What a paper writes on the y axis."""
    if column.task == "regression":
        return "R² (ridge probe)"
    if column.key == MEAN:
        return "mean transfer accuracy (%)"
    return "linear accuracy (%)" + (", val.-selected" if metric == "acc_val_selected" else "")


def panel_title(column: Column) -> str:
    return column.header.replace(" (R²)", "")


def chance(column: Column) -> float | None:
    record = dataset_record(column.key)  # its number of classes, from the data set's record
    return record.chance if record is not None and column.task == "classification" else None


def panel_grid(figure: Any, n: int, columns: int = 3, sharex: bool = False) -> list[Any]:
    """n axes on a grid of at most `columns` per row; none left empty."""
    cols = min(n, columns)
    rows = math.ceil(n / cols)
    axes = [figure.add_subplot(rows, cols, i + 1) for i in range(n)]
    if sharex:
        for ax in axes[1:]:
            ax.sharex(axes[0])
    return axes


def shared_legend(figure: Any, axes: list[Any], extra: list[tuple[Any, str]] | None = None) -> None:
    """One legend below all panels, each label once."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    for handle, label in extra or []:
        seen.setdefault(label, handle)
    if seen:
        figure.legend(
            list(seen.values()),
            list(seen.keys()),
            loc="outside lower center",
            ncols=min(len(seen), 3 if figure.get_figwidth() > 9 else 2),
            fontsize="small",
            frameon=False,
        )
