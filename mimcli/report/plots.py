"""Plots: PNG loss curves per run, accuracy bars per table and sweep curves (needs matplotlib)."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from mimcli.report.constants import LAMBDA, MEAN
from mimcli.report.tables import Cell, Report


LOSS_SKIP = ("epoch", "lr", "images_per_s", "seconds", "train_acc")


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def error_bar(cell: Cell) -> float:
    """The cell's std over seeds, or NaN (matplotlib draws no bar) when n = 1: no spread is known."""
    return cell.std if len(cell.values) > 1 else float("nan")


def figure_colours(n: int) -> list[Any]:
    """Distinct colours for n bars: matplotlib's 10-colour cycle, tab20 beyond that."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if n <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(n)]


def write_plots(report: Report, directory: Path) -> list[tuple[str, Path]] | None:
    """PNG figures (title, path); None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, Path]] = []

    def save(figure: Any, name: str, title: str) -> None:
        FigureCanvasAgg(figure)
        path = directory / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        written.append((title, path))

    used: Counter[str] = Counter()
    common = os.path.commonpath([str(r.path.resolve().parent) for r in report.runs])
    for run in report.runs:
        short = Path(os.path.relpath(run.path.resolve(), common)).as_posix()
        terms = [k for k in dict.fromkeys(k for m in run.metrics for k in m) if k not in LOSS_SKIP
                 and all(isinstance(m.get(k, 0.0), (int, float)) for m in run.metrics)]
        if not run.metrics or not terms:
            continue
        figure = Figure(figsize=(6, 4))
        axes = figure.add_subplot()
        for term in terms:
            points = [(m["epoch"], m[term]) for m in run.metrics if term in m and "epoch" in m]
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None,
                      label=term)
        axes.set(xlabel="epoch", ylabel="loss", title=f"{short}: {run.model}")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend()
        base = safe_name(short)
        used[base] += 1
        save(figure, f"loss-{base}" + (f"-{used[base]}" if used[base] > 1 else ""), short)
    for table in report.tables:
        columns = [c for c in table.columns if c.task != "regression"]
        if not columns:
            continue
        figure = Figure(figsize=(max(6.0, 1.2 * len(columns) + 2), 4.5))
        axes = figure.add_subplot()
        width = 0.8 / max(len(table.rows), 1)
        colours = figure_colours(len(table.rows))
        for index, row in enumerate(table.rows):
            xs = [i + (index - (len(table.rows) - 1) / 2) * width for i, c in enumerate(columns) if c.key in row.cells]
            cells = [row.cells[c.key] for c in columns if c.key in row.cells]
            axes.bar(xs, [c.mean for c in cells], width, yerr=[error_bar(c) for c in cells], label=row.label, capsize=2,
                     color=colours[index])
        axes.set_xticks(range(len(columns)), [c.header for c in columns], rotation=30, ha="right")
        axes.set(ylabel=f"accuracy (%), {report.metric}", title=f"Accuracy per model: {table.title}")
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        save(figure, f"accuracy-{safe_name(table.source)}", f"Accuracy per model: {table.title}")
    for sweep in report.sweeps:
        figure = Figure(figsize=(10, 4))
        targets = [sweep.table.primary, sweep.table.column(MEAN)]
        for position, column in enumerate([c for c in targets if c is not None], start=1):
            axes = figure.add_subplot(1, 2, position)
            for series in sweep.series:
                points = [p for p in series.points if column.key in p.row.cells]
                axes.errorbar([p.x for p in points], [p.row.cells[column.key].mean for p in points],
                              yerr=[error_bar(p.row.cells[column.key]) for p in points], marker="o", capsize=3,
                              label=series.label)
            for style, row in zip(("--", ":", "-.") * len(sweep.baselines), sweep.baselines):
                if column.key in row.cells:
                    axes.axhline(row.cells[column.key].mean, linestyle=style, color="grey",
                                 label=f"baseline: {row.group.label}")
            if sweep.axis == LAMBDA:
                xs = [p.x for s in sweep.series for p in s.points]
                positive = [x for x in xs if x > 0]
                if min(xs) > 0:
                    axes.set_xscale("log")
                elif positive:
                    axes.set_xscale("symlog", linthresh=min(positive))
            axes.set(xlabel=sweep.symbol, ylabel=f"{column.header} ({report.metric})", title=column.header)
            axes.legend(fontsize="small")
        figure.suptitle(sweep.title)
        axis = "lambda" if sweep.axis == LAMBDA else "epochs"
        save(figure, f"{axis}-{safe_name(sweep.table.source)}", sweep.title)
    return written
