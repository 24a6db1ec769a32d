"""Figures for a paper (needs matplotlib): PDF (vector) and PNG (200 dpi) of each.

- loss-<folder>: the loss curves of the runs in one folder (a sweep) overlaid, one panel per loss term;
  runs whose curve repeats another's (the points of an epochs sweep cut from one run) are drawn once.
- accuracy-<source>: one panel per probed task (every column of the table), one bar per row.
- lambda-/epochs-<source>: accuracy against lambda or epochs, one panel per task.
Error bars (sample std over training seeds) only where n >= 2; single runs are drawn hollow / hatched
and the legend says so. Chance level is drawn where it is known (classification with known classes).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from mimcli.config.datasets import dataset_record
from mimcli.report.cells import Column
from mimcli.report.constants import LAMBDA, MEAN
from mimcli.report.information_plots import write_information_plots
from mimcli.report.naming import safe_name
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


def figure_colours(n: int) -> list[Any]:
    """Distinct colours for n series: matplotlib's 10-colour cycle, tab20 beyond that."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if n <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(n)]


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
            ncols=min(len(seen), 3),
            fontsize="small",
            frameon=False,
        )


def run_labels(report: Report) -> dict[int, str]:
    """Each run's row label (model + the settings that tell rows apart), plus its seed where a row pools several."""
    labels: dict[int, str] = {}
    for table in report.tables:
        for row in table.rows:
            for run in row.group.runs:
                seed = f", seed {run.config.train.seed}" if len(row.group.runs) > 1 else ""
                labels[id(run)] = row.label + seed
    return labels


def write_plots(report: Report, directory: Path) -> list[tuple[str, Path]] | None:
    """Figures as (title, PNG path), each also written as PDF beside it; None when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, Path]] = []

    def save(figure: Any, name: str, title: str) -> None:
        FigureCanvasAgg(figure)
        figure.suptitle(title)
        path = directory / f"{name}.png"
        figure.savefig(path, dpi=DPI)
        figure.savefig(directory / f"{name}.pdf")
        written.append((title, path))

    def new_figure(panels: int, height: float = 3.0) -> Any:
        cols = min(panels, 3)
        return Figure(figsize=(3.6 * cols + 0.6, height * math.ceil(panels / cols) + 1.0), layout="constrained")

    # ---- loss curves: one figure per folder of runs (a sweep), one panel per loss term
    labels = run_labels(report)
    folders: dict[Path, list[Any]] = defaultdict(list)
    for run in report.runs:
        if run.metrics:
            folders[run.path.resolve().parent].append(run)
    for folder, members in sorted(folders.items()):
        curves: list[tuple[str, list[dict[str, Any]]]] = []
        for run in sorted(members, key=lambda r: -len(r.metrics)):
            if any(other[: len(run.metrics)] == run.metrics for _, other in curves):
                continue  # an epochs-sweep point cut from a longer run: the same curve
            curves.append((labels.get(id(run), run.model), run.metrics))
        terms = [
            k
            for k in dict.fromkeys(k for _, ms in curves for m in ms for k in m)
            if k not in LOSS_SKIP
            and all(isinstance(m.get(k, 0.0), (int, float)) for _, ms in curves for m in ms)
            and any(m.get(k, 0.0) != 0 for _, ms in curves for m in ms)
        ]  # a term no run uses: no panel
        if not terms:
            continue
        figure = new_figure(len(terms))
        axes = panel_grid(figure, len(terms), sharex=True)
        colours = figure_colours(len(curves))
        for ax, term in zip(axes, terms):
            for colour, (label, metrics) in zip(colours, curves):
                curve = [(m["epoch"], m[term]) for m in metrics if term in m and "epoch" in m]
                ax.plot(
                    [c[0] for c in curve],
                    [c[1] for c in curve],
                    color=colour,
                    label=label,
                    marker="o" if len(curve) <= 20 else None,
                    markersize=3,
                )
            ax.set(xlabel="epoch", ylabel="mean over the epoch", title=LOSS_NAMES.get(term, term))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        shared_legend(figure, axes)
        save(figure, f"loss-{safe_name(folder.name)}", f"Training losses: {folder.name}")

    # ---- accuracy per model: one panel per task
    single = Patch(facecolor="white", edgecolor="black", hatch="///", label="hatched: a single run (no error bar)")
    chance_handle = Line2D([], [], color="black", linestyle=":", label="chance")
    for table in report.tables:
        columns = table.columns
        if not columns:
            continue
        figure = new_figure(len(columns), height=3.2)
        axes = panel_grid(figure, len(columns))
        colours = figure_colours(len(table.rows))
        any_single = any_chance = False
        for ax, column in zip(axes, columns):
            for index, row in enumerate(table.rows):
                cell = row.cells.get(column.key)
                if cell is None:
                    continue
                n = len(cell.values)
                any_single |= n < 2
                ax.bar(
                    index,
                    cell.mean,
                    0.8,
                    color=colours[index],
                    edgecolor="black",
                    linewidth=0.5,
                    hatch="///" if n < 2 else None,
                    yerr=cell.std if n >= 2 else None,
                    capsize=3,
                )
            level = chance(column)
            if level is not None:
                ax.axhline(level, color="black", linestyle=":", linewidth=1)
                any_chance = True
            ax.set_xticks([])
            ax.set(ylabel=axis_label(column, report.metric), title=panel_title(column))
        extra: list[tuple[Any, str]] = [
            (Patch(facecolor=colour, edgecolor="black", linewidth=0.5), row.label)
            for colour, row in zip(colours, table.rows)
        ]
        extra += [(single, "hatched: a single run (no error bar)")] if any_single else []
        extra += [(chance_handle, "chance")] if any_chance else []
        shared_legend(figure, axes, extra)
        save(figure, f"accuracy-{safe_name(table.source)}", f"Linear probe per model: {table.title}")

    # ---- sweeps: accuracy against lambda or epochs, one panel per task
    for sweep in report.sweeps:
        columns = sweep.table.columns
        figure = new_figure(len(columns), height=3.0)
        axes = panel_grid(figure, len(columns), sharex=True)
        colours = figure_colours(len(sweep.series))
        any_single = any_chance = False
        for ax, column in zip(axes, columns):
            for colour, series in zip(colours, sweep.series):
                points = [p for p in series.points if column.key in p.row.cells]
                if not points:
                    continue
                cells = [p.row.cells[column.key] for p in points]
                xs = [p.x for p in points]
                ax.plot(xs, [c.mean for c in cells], color=colour, label=series.label)
                for x, cell in zip(xs, cells):
                    if len(cell.values) >= 2:
                        ax.errorbar([x], [cell.mean], yerr=[cell.std], color=colour, marker="o", capsize=3)
                    else:
                        any_single = True
                        ax.plot([x], [cell.mean], marker="o", markerfacecolor="white", color=colour)
            for style, row in zip(("--", "-.", (0, (5, 1))) * len(sweep.baselines), sweep.baselines):
                if column.key in row.cells:
                    ax.axhline(
                        row.cells[column.key].mean, linestyle=style, color="grey", label=f"baseline: {row.group.label}"
                    )
            level = chance(column)
            if level is not None:
                ax.axhline(level, color="black", linestyle=":", linewidth=1)
                any_chance = True
            xs = [p.x for s in sweep.series for p in s.points]
            if sweep.axis == LAMBDA:
                positive = [x for x in xs if x > 0]
                if min(xs) > 0:
                    ax.set_xscale("log")
                elif positive:
                    ax.set_xscale("symlog", linthresh=min(positive))
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(
                xlabel="λ" if sweep.axis == LAMBDA else "pretraining epochs",
                ylabel=axis_label(column, report.metric),
                title=panel_title(column),
            )
        hollow = Line2D(
            [],
            [],
            marker="o",
            markerfacecolor="white",
            color="black",
            linestyle="",
            label="hollow: a single run (no error bar)",
        )
        extra = [(hollow, "hollow: a single run (no error bar)")] if any_single else []
        extra += [(chance_handle, "chance")] if any_chance else []
        shared_legend(figure, axes, extra)
        axis = "lambda" if sweep.axis == LAMBDA else "epochs"
        save(figure, f"{axis}-{safe_name(sweep.table.source)}", sweep.title)
    written.extend(write_information_plots(report.runs, directory))
    return written
