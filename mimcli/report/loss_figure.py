"""loss-<folder>: the loss curves of the runs in one folder (a sweep) overlaid, one panel per loss term.

Runs whose curve repeats another's (the points of an epochs sweep cut from one run) are drawn once. A run
is drawn in its row's colour with its seed's marker (plots.Style), so a model has the colour it has in
the accuracy figures."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mimcli.report.collect import Run
from mimcli.report.naming import safe_name
from mimcli.report.plots import (
    LOSS_NAMES,
    LOSS_SKIP,
    Drawn,
    Style,
    new_figure,
    panel_grid,
    runs_over_epochs,
    shared_legend,
)
from mimcli.report.tables import Report


def distinct_curves(members: list[Run]) -> list[Run]:
    """The runs of one folder whose curves are not a prefix of a longer run's curve, longest first."""
    kept: list[Run] = []
    for run in sorted(members, key=lambda r: -len(r.metrics)):
        if not any(other.metrics[: len(run.metrics)] == run.metrics for other in kept):
            kept.append(run)
    return kept


def loss_terms(curves: list[Run]) -> list[str]:
    """The numeric metrics.jsonl keys that some run uses (a term no run uses gets no panel)."""
    keys = dict.fromkeys(k for run in curves for m in run.metrics for k in m)
    lines = [m for run in curves for m in run.metrics]
    return [
        k
        for k in keys
        if k not in LOSS_SKIP
        and all(isinstance(m.get(k, 0.0), (int, float)) for m in lines)
        and any(m.get(k, 0.0) != 0 for m in lines)
    ]


def loss_figure(folder: Path, members: list[Run], style: Style) -> Drawn | None:
    curves = style.order(distinct_curves(members))
    terms = loss_terms(curves)
    if not terms:
        return None
    figure = new_figure(len(terms))
    axes = panel_grid(figure, len(terms), sharex=True)
    for ax, term in zip(axes, terms):
        logged = [(run, [(m["epoch"], m[term]) for m in run.metrics if term in m and "epoch" in m]) for run in curves]
        runs_over_epochs(ax, logged, style)
        ax.set(xlabel="epoch", ylabel="mean over the epoch", title=LOSS_NAMES.get(term, term))
    shared_legend(figure, axes)
    figure.suptitle(f"Training losses: {folder.name}\ncolour: model; marker: training seed")
    return Drawn(f"loss-{safe_name(folder.name)}", f"Training losses: {folder.name}", figure)


def loss_figures(report: Report, style: Style) -> list[Drawn]:
    """One figure per folder of runs that logged metrics, in folder order."""
    folders: dict[Path, list[Run]] = defaultdict(list)
    for run in report.runs:
        if run.metrics and style.row(run) is not None:
            folders[run.path.resolve().parent].append(run)
    drawn = [loss_figure(folder, members, style) for folder, members in sorted(folders.items())]
    return [d for d in drawn if d is not None]
