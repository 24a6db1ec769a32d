"""Rendering the report: rich tables, one markdown document, JSON and CSV records."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from rich.console import RenderableType
from rich.markup import escape

from mimcli.report.accuracy import reference_label
from mimcli.report.cells import AccuracyTable, Column, Row
from mimcli.report.constants import DAGGER, MEAN, METRICS, RECORD_FIELDS
from mimcli.report.sweeps import SweepTable
from mimcli.report.tables import Report, protocol_lines
from mimcli.tables import Col, fit_table


def cell_text(table: AccuracyTable, index: int, column: Column) -> str | None:
    cell = table.rows[index].cells.get(column.key)
    return None if cell is None else cell.text(column.digits)


def rich_tables(report: Report, plain: bool = False, width: int = 200) -> list[RenderableType]:
    """Rich tables that stay readable at `width` columns (mimcli.tables: a table too wide is stacked into
    parts, each with the model column; nothing ends in '…'), each followed by its notes as plain lines;
    the best value per block carries a '*' (and is green unless `plain`, e.g. for a text file)."""
    out: list[RenderableType] = []
    for table in report.tables:
        best = "Best per block marked *." if plain else "Best per block marked * (green on a terminal)."
        compared = report.compare is not None and table.has_reference
        under = [f"Under each value: the {reference_name(report)} number (ours - reference)."] if compared else []
        columns = [Col("model", key=True), Col("n", justify="right")]
        columns += [Col(c.header, justify="right") for c in table.columns]
        rows, sections = [], []
        for index, row in enumerate(table.rows):
            if index and row.block != table.rows[index - 1].block:
                sections.append(index)
            texts = [escape(row.label), str(len(row.group.runs))]
            for column in table.columns:
                text = cell_text(table, index, column)
                if text is None:
                    texts.append("-")
                    continue
                if (index, column.key) in table.best:
                    text = f"{text}*" if plain else f"[bold green]{text}*[/bold green]"
                cell = row.cells[column.key]
                if compared and cell.reference is not None:
                    text += f"\n[dim]{cell.reference:.{column.digits}f} ({cell.difference:+.{column.digits}f})[/dim]"
                texts.append(text)
            rows.append(texts)
        notes = [escape(" ".join([best, *under, *table.notes])), *map(escape, table.spread)]
        out += fit_table(escape(table.title), columns, rows, width, sections=sections, notes=notes)
    for sweep in report.sweeps:
        out += rich_sweep(sweep, width)
    return out


def reference_name(report: Report) -> str:
    """The reference a comparison shows, with its training length: 'paper (...), 200 epochs'."""
    return reference_label(report.reference) if report.reference else str(report.compare)


def sweep_rows(sweep: SweepTable) -> list[tuple[str, str, Row]]:
    """(label, x as text, row): the baselines first, then each series by x."""
    rows = [(f"baseline: {r.group.label}", "-", r) for r in sweep.baselines]
    for series in sweep.series:
        rows.extend((series.label, f"{p.x:g}", p.row) for p in series.points)
    return rows


def sweep_cells(sweep: SweepTable, row: Row) -> list[str]:
    out = []
    for column in (sweep.table.primary, sweep.table.column(MEAN)):
        cell = row.cells.get(column.key) if column is not None else None
        out.append("-" if column is None or cell is None else cell.text(column.digits))
    return out


def sweep_headers(sweep: SweepTable) -> list[str]:
    primary = sweep.table.primary
    return ["model", sweep.symbol, primary.header if primary else "source", MEAN, "n"]


def rich_sweep(sweep: SweepTable, width: int = 200) -> list[RenderableType]:
    headers = sweep_headers(sweep)
    columns = [Col(headers[0], key=True), Col(headers[1], justify="right", key=True)]
    columns += [Col(h, justify="right") for h in headers[2:]]
    rows = [
        [escape(label), x, *sweep_cells(sweep, row), str(len(row.group.runs))] for label, x, row in sweep_rows(sweep)
    ]
    return fit_table(escape(sweep.title), columns, rows, width)


def md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(md_escape(c) for c in cells) + " |"


def markdown_table(table: AccuracyTable, compare: str | None) -> list[str]:
    compare = compare if table.has_reference else None  # no reference numbers: no columns of '-'
    headers = ["model", "n"]
    for column in table.columns:
        headers.append(column.header)
        if compare:
            headers += [compare, "Δ"]
    lines = [md_row(headers), "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for index, row in enumerate(table.rows):
        cells = [row.label, str(len(row.group.runs))]
        for column in table.columns:
            text = cell_text(table, index, column)
            cells.append("-" if text is None else f"**{text}**" if (index, column.key) in table.best else text)
            if compare:
                cell = row.cells.get(column.key)
                ref = None if cell is None else cell.reference
                cells.append("-" if ref is None else f"{ref:.{column.digits}f}")
                cells.append("-" if cell is None or ref is None else f"{cell.difference:+.{column.digits}f}")
        lines.append(md_row(cells))
    return lines


MARKDOWN_TITLE = "# Linear-probe report"  # the first line; `mim report --out` replaces a file that starts with it


def markdown(
    report: Report, paths: list[Path], figures: list[tuple[str, Path]] | None, plots_note: str | None, base: Path
) -> str:
    """The whole report as one markdown document (figure links relative to `base`)."""
    lines = [
        MARKDOWN_TITLE,
        "",
        f"{len(report.runs)} runs from {', '.join(f'`{p}`' for p in paths)}. Table metric: "
        f"`{report.metric}` ({METRICS[report.metric]}).",
        "",
        "## Protocol",
        "",
    ]
    lines += [f"- **{what}**: {value}" for what, value in protocol_lines(report)]
    for table in report.tables:
        lines += ["", f"## {table.title}", "", *markdown_accuracy(report, table)]
    for sweep in report.sweeps:
        lines += ["", f"## {sweep.title}", "", *markdown_sweep(sweep)]
    if figures:
        lines += ["", "## Figures", ""]
        loss = [(t, p) for t, p in figures if p.name.startswith("loss-")]
        for title, path in figures:
            if (title, path) not in loss:
                lines += [f"![{title}]({relative(path, base)})", ""]
        if loss:
            lines.append("Loss per epoch: " + ", ".join(f"[{t}]({relative(p, base)})" for t, p in loss) + ".")
    elif plots_note:
        lines += ["", f"_{plots_note}_"]
    if report.warnings:
        lines += ["", "## Warnings", "", *[f"- {w}" for w in report.warnings]]
    return "\n".join(lines) + "\n"


def markdown_accuracy(report: Report, table: AccuracyTable) -> list[str]:
    """One accuracy table in markdown with its notes and spread lines (the report's section, less its heading)."""
    transfer = [c.header for c in table.columns if c.role == "transfer" and c.task == "classification"]
    notes = ["Best value per block (rows of one base method) in **bold**; mean ± std over training seeds where n > 1."]
    if transfer:
        notes.append(f"{MEAN}: mean over {', '.join(transfer)}.")
    if any(c.task == "regression" for c in table.columns):
        notes.append("Regression columns show R² of the ridge probe.")
    if any(r.flagged for r in table.rows) or any(c.flagged for r in table.rows for c in r.cells.values()):
        notes.append(
            f"{DAGGER}: trained or probed with a different protocol from the rest of the table (see Warnings)."
        )
    if report.compare and table.has_reference:
        notes.append(f"`{report.compare}`: the {reference_name(report)} number; Δ = ours - reference.")
    lines = [*markdown_table(table, report.compare), "", " ".join(notes + table.notes)]
    return lines + (["", *[f"- {line}" for line in table.spread]] if table.spread else [])


def markdown_sweep(sweep: SweepTable) -> list[str]:
    headers = sweep_headers(sweep)
    lines = [md_row(headers), "|---|" + "---:|" * (len(headers) - 1)]
    return lines + [
        md_row([label, x, *sweep_cells(sweep, row), str(len(row.group.runs))]) for label, x, row in sweep_rows(sweep)
    ]


def relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def to_json(rows: list[dict[str, Any]]) -> str:
    """Strict JSON: a NaN or infinite value (a probe that diverged) is written as null, which every parser reads."""
    return json.dumps(finite(rows), indent=2, allow_nan=False) + "\n"


def finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None, through dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def to_csv(rows: list[dict[str, Any]]) -> str:
    fields = list(RECORD_FIELDS) + [k for k in ("reference", "difference") if rows and k in rows[0]]
    fields += ["epoch"] if any("epoch" in row for row in rows) else []  # information records (per epoch)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                **row,
                "layers": ",".join(map(str, row.get("layers") or [])),
                **{k: "" if row.get(k) is None else row[k] for k in ("lambda", "reference", "difference") if k in row},
            }
        )
    return buffer.getvalue()
