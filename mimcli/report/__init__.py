"""`mim report`: gather finished, probed runs into the paper's tables, sweep tables, plots and files.

Reading (nothing here trains or probes):
  every run directory (a folder with config.toml) below the given paths, with its run.json
  (must say "finished"), probe.json (the probe records) and metrics.jsonl (loss curves). A run
  that cannot be read, is unfinished, has no probe results or has stale ones is skipped with a
  warning naming it.

Tables:
  accuracy  one table per source data set (the runs' data.dataset), one row per model
            (`describe_model`, plus the settings that tell rows of the same model apart, e.g.
            lambda), one column per probe data set: source first, then transfer sets, then the
            mean over the transfer (classification) sets. Runs whose configs differ only in
            train.seed (and execution details: device, precision, threads...) form one row:
            mean +- sample std over them. Best value per block (rows of one base method) is bold.
  lambda    source accuracy and transfer mean against regularizer.lambda, per model
  epochs    the same against train.epochs
Rows that differ in backbone / width / image size / stem, and cells whose probe protocol
(protocol, layers, probe hyper-parameters) differs from the rest of their column, are marked
with a dagger and named in a warning: never silently mixed.

Modules: constants (the vocabulary), reference (paper.json), collect (runs and their records),
groups (runs -> rows); one module per table: accuracy (the accuracy table, with cells and spread),
sweeps (lambda / epochs), tables (the Report and its protocol lines), probe_table (`mim probe`'s);
render (rich, markdown, JSON, CSV); one module per figure family: accuracy_figure, sweep_figure,
loss_figure, information_plots, drawn with what plots.py shares and saved by figures.write_plots.
This module holds the entry point, run_report; it exports only what the CLI, the sweep and users
call (docs/report.md): anything else is imported from the module that defines it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from mimcli.errors import UsageError
from mimcli.report.collect import records
from mimcli.report.constants import COMPARE, FORMATS, PLOTS_HINT, RECORD_FIELDS
from mimcli.report.export import write_records
from mimcli.report.figures import write_plots
from mimcli.report.information_plots import information_records
from mimcli.report.render import MARKDOWN_TITLE, markdown, rich_tables, to_csv, to_json
from mimcli.report.tables import Report, build_report, protocol_lines
from mimcli.rundir import runs
from mimcli.tables import Col, fit_table

__all__ = ["Report", "build_report", "records", "run_report"]


def run_report(
    paths: list[Path],
    fmt: str = "table",
    out: Path | None = None,
    plots: Path | None = None,
    compare: str | None = None,
    metric: str = "acc_best_test",
    console: Console | None = None,
    err_console: Console | None = None,
    force: bool = False,
    records_dir: Path | None = None,
) -> Report:
    """`mim report`: tables (rich | markdown | json | csv) to `out` or the console, PNGs to `plots`.

    Warnings and notes go to `err_console` (stderr by default), so JSON / CSV / markdown on stdout
    stay clean for redirection. An existing `out` is replaced only when it is a report of the same
    format (`written_by_report`) or with `force`: a file the user wrote is never overwritten.
    `records_dir`: also write each run's record there (export), which `mim report` reads like the run.
    """
    check_arguments(fmt, out, plots, compare, force)
    paths = [Path(p) for p in paths] or [Path("runs")]
    console = console or Console()
    err = err_console or Console(stderr=True)
    warnings: list[str] = []
    try:
        report = build_report(paths, metric, compare, warnings)
    finally:
        for warning in warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)
    if records_dir is not None:
        written = write_records(report.runs, paths, Path(records_dir))
        err.print(f"wrote {len(written)} run records to {records_dir}", markup=False, highlight=False, soft_wrap=True)
    figures = write_plots(report, plots) if plots is not None else None
    note = PLOTS_HINT if plots is not None and figures is None else None
    if note:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    elif figures is not None:
        err.print(f"wrote {len(figures)} plots to {plots}", markup=False, highlight=False, soft_wrap=True)
    if fmt == "table":
        renderables: list[Any] = rich_tables(report, plain=out is not None, width=console.width if out is None else 200)
        lines = [[escape(what), escape(value)] for what, value in protocol_lines(report)]
        columns = (Col("what", key=True), Col("value", wrap=True))
        renderables += fit_table("protocol", columns, lines, console.width if out is None else 200, show_header=False)
        if out is None:
            for renderable in renderables:
                console.print(renderable)
            return report
        recorder = Console(file=io.StringIO(), record=True, width=200, color_system=None)
        for renderable in renderables:
            recorder.print(renderable)
        text = recorder.export_text()
    elif fmt == "markdown":
        text = markdown(report, paths, figures, note, Path(out).parent if out is not None else Path.cwd())
    else:
        rows = records(report.runs, metric, report.reference) + information_records(report.runs)
        text = to_json(rows) if fmt == "json" else to_csv(rows)
    if out is None:
        console.out(text, end="", highlight=False)
    else:
        runs.atomic_write_text(Path(out), text)
        err.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)
    return report


def check_arguments(fmt: str, out: Path | None, plots: Path | None, compare: str | None, force: bool) -> None:
    """Refuse bad options before anything is read or written: one UsageError naming the option."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if compare is not None and compare not in COMPARE:
        raise UsageError(f"--compare {compare!r}: choose one of {', '.join(COMPARE)}")
    if out is not None and Path(out).is_dir():
        raise UsageError(f"--out {out} is a directory: give the name of the file to write")
    if out is not None and not force and Path(out).exists() and not written_by_report(Path(out), fmt):
        raise UsageError(
            f"--out {out} exists and is not a {fmt} report mim wrote: choose another file, or pass "
            "--force to replace it"
        )
    if plots is not None and Path(plots).exists() and not Path(plots).is_dir():
        raise UsageError(f"--plots {plots} is not a folder: give a folder for the PNG files")


def written_by_report(path: Path, fmt: str) -> bool:
    """True when `path` holds what `mim report --format fmt` writes: the markdown title, the CSV header,
    a JSON list of run records, or plain tables ending with the protocol table."""
    try:
        text = path.read_bytes().decode()
    except (OSError, ValueError):
        return False
    if fmt == "json":
        try:
            rows = json.loads(text)
        except ValueError:
            return False
        return isinstance(rows, list) and all(isinstance(row, dict) and "run" in row for row in rows)
    first = text.split("\n", 1)[0]
    if fmt == "markdown":
        return first == MARKDOWN_TITLE
    if fmt == "csv":
        return first.startswith(",".join(RECORD_FIELDS[:3]) + ",")
    return "━" in text and any(line.strip() == "protocol" for line in text.splitlines())
