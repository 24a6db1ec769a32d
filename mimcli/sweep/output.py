"""Printing a sweep: the outcome table, the report of its runs, and the status of a launcher's jobs."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console, RenderableType
from rich.markup import escape

from mimcli.errors import UsageError
from mimcli.sweep.jobs import STATES, PointStatus, log_tail, sweep_status
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


def _short(path: str) -> str:
    """A log path relative to the current folder when it is below it (the table stays readable)."""
    if not path:
        return ""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def status_table(sweep_dir: Path, statuses: list[PointStatus], width: int) -> list[RenderableType]:
    """`mim sweep status`: one row per point, with its job and the log to read (fit to the width)."""
    rows = [[escape(s.name), s.state, s.job_id or "-", escape(_short(s.log) or "-"), escape(s.note)] for s in statuses]
    columns = (Col("point", key=True), Col("state"), Col("job"), Col("log", wrap=True), Col("note", wrap=True))
    return fit_table(escape(f"sweep {sweep_dir}"), columns, rows, width)


def print_status(sweep_dir: Path, console: Console, tail: int = 10) -> list[PointStatus]:
    """The status table, a count per state, and the last lines of each failed point's log."""
    statuses = sweep_status(sweep_dir)
    for part in status_table(sweep_dir, statuses, console.width):
        console.print(part)
    counts = [f"{sum(s.state == state for s in statuses)} {state}" for state in STATES]
    console.print(", ".join(c for c in counts if not c.startswith("0 ")), highlight=False)
    for s in statuses:
        if s.state == "failed" and (s.errors or s.log):
            log = s.errors if log_tail(s.errors, 1) else s.log  # the traceback, else the progress
            lines = log_tail(log, tail)
            console.print(
                f"\n{s.name} failed (job {s.job_id}); last lines of {_short(log)}:", markup=False, highlight=False
            )
            for line in lines or ["(the log is empty or not there)"]:
                console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    if any(s.state == "failed" for s in statuses):
        console.print("\nresubmit the failed points: the same `mim sweep` command with --retry-failed", highlight=False)
    return statuses
