"""Printing a sweep: the outcome table and the report of its runs."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from mimcli.errors import UsageError
from mimcli.sweep.state import PointOutcome


def outcome_table(outcomes: list[PointOutcome]) -> Table:
    table = Table(title=f"sweep {outcomes[0].point.sweep_dir}" if outcomes else "sweep")
    for column in ("point", "status", "trained", "probed", "note"):
        table.add_column(column)
    for o in outcomes:
        trained = ("resumed" if o.resumed else "yes") if o.trained else "-"
        table.add_row(o.point.name, o.status, trained, "yes" if o.probed else "-", o.message)
    return table


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
