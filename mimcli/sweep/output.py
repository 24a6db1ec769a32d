"""Printing a sweep: the outcome table and the report of its runs."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console, RenderableType
from rich.markup import escape

from mimcli.errors import UsageError
from mimcli.sweep.state import PointOutcome
from mimcli.tables import Col, fit_table


def outcome_table(outcomes: list[PointOutcome], width: int) -> list[RenderableType]:
    rows = []
    for o in outcomes:
        trained = ("resumed" if o.resumed else "yes") if o.trained else "-"
        rows.append([escape(o.point.name), o.status, trained, "yes" if o.probed else "-", escape(o.message)])
    columns = (Col("point", key=True), Col("status"), Col("trained"), Col("probed"), Col("note", wrap=True))
    title = escape(f"sweep {outcomes[0].point.sweep_dir}") if outcomes else "sweep"
    return fit_table(title, columns, rows, width)


def print_report(sweep_dir: Path, console: Console) -> None:
    """The report table of the sweep's runs (mimcli.report), when that module is there."""
    try:
        from mimcli.report import run_report
    except ModuleNotFoundError as error:
        if error.name != "mimcli.report":
            raise
        console.print(f"(no report module: probe results are in {sweep_dir}/**/probe.json)")
        return
    try:
        run_report([sweep_dir], fmt="table", console=console)
    except UsageError as error:
        console.print(f"report: {error}")
