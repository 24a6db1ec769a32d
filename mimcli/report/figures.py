"""`mim report --plots`: every figure of a report (needs matplotlib), saved as PDF (vector) and PNG (200 dpi).

The figures are drawn by one module per family (loss_figure, accuracy_figure, sweep_figure,
information_plots) with the colours, markers, ticks and error-bar rule of plots.py."""

from __future__ import annotations

from pathlib import Path

from mimcli.report.accuracy_figure import accuracy_figure
from mimcli.report.information_plots import information_figures
from mimcli.report.loss_figure import loss_figures
from mimcli.report.plots import DPI, Drawn, Style
from mimcli.report.sweep_figure import sweep_figure
from mimcli.report.tables import Report


def report_figures(report: Report) -> list[Drawn]:
    """Every figure of `report`, unsaved, in the order the markdown shows them."""
    style = Style(report)
    drawn = loss_figures(report, style)
    drawn += [d for table in report.tables if (d := accuracy_figure(table, report.metric, style)) is not None]
    drawn += [sweep_figure(sweep, report.metric, style) for sweep in report.sweeps]
    return drawn + information_figures(report.runs, style)


def write_plots(report: Report, directory: Path) -> list[tuple[str, Path]] | None:
    """Figures as (title, PNG path), each also written as PDF beside it; None when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure  # noqa: F401  (present: the figures can be drawn)
    except ImportError:
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, Path]] = []
    for drawn in report_figures(report):
        FigureCanvasAgg(drawn.figure)
        path = directory / f"{drawn.name}.png"
        bbox = "tight" if drawn.tight else None
        drawn.figure.savefig(path, dpi=DPI, bbox_inches=bbox)
        drawn.figure.savefig(path.with_suffix(".pdf"), bbox_inches=bbox)
        written.append((drawn.title, path))
    return written
