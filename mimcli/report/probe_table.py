"""The rich table `mim probe` (and `mim pretrain` with [probe] data sets, and sweeps) print after probing."""

from __future__ import annotations

from rich.console import Console, RenderableType
from rich.markup import escape

from mimcli.probe.records import ProbeResult, Summary
from mimcli.tables import Col, fit_table

COLUMNS = (
    Col("dataset", key=True),
    Col("protocol", key=True),
    Col("layers", key=True),
    Col("metric", group="value"),
    Col("value", justify="right", group="value"),
    Col("n train/test"),
    Col("s", justify="right"),
    Col("status"),
)


def _format_metric(summary_: Summary, percent: bool) -> str:
    digits = 2 if percent else 4
    text = f"{summary_['mean']:.{digits}f}"
    return text + f"±{summary_['std']:.{digits}f}" if len(summary_["values"]) > 1 else text


def probe_table(result: ProbeResult, width: int) -> list[RenderableType]:
    """A probe.json-shaped result as tables that fit `width` (one row per record, one line per metric),
    then the messages of records that did not run."""
    rows, notes = [], []
    for record in result.get("results", []):
        metrics = record.get("metrics") or {}
        names = "\n".join(metrics) or "-"
        values = "\n".join(_format_metric(s, name.startswith("acc")) for name, s in metrics.items()) or "-"
        status = record["status"] if record["status"] == "ok" else f"[red]{escape(record['status'])}[/red]"
        if record.get("message"):
            notes.append(
                f"[red]{escape(record['dataset'])}[/red] ({record['protocol']}): {escape(str(record['message']))}"
            )
        sizes = f"{record['n_train']}/{record['n_test']}" if record.get("n_train") is not None else "-"
        seconds = f"{record['seconds']:.1f}" if record.get("seconds") is not None else "-"
        layers = ",".join(map(str, record["layers"]))
        rows.append([escape(record["dataset"]), record["protocol"], layers, names, values, sizes, seconds, status])
    title = f"probes: {result.get('run', '')} ({result.get('checkpoint', {}).get('path', '')})"
    return fit_table(escape(title), COLUMNS, rows, width, notes=notes)


def print_probe_table(result: ProbeResult, console: Console | None = None) -> None:
    console = console or Console()
    for renderable in probe_table(result, console.width):
        console.print(renderable, highlight=False)
