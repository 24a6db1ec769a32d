"""The rich table `mim probe` (and `mim pretrain` with [probe] data sets, and sweeps) print after probing."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from mimcli.probe.records import ProbeResult, Summary


def _format_metric(summary_: Summary, percent: bool) -> str:
    digits = 2 if percent else 4
    text = f"{summary_['mean']:.{digits}f}"
    return text + f"±{summary_['std']:.{digits}f}" if len(summary_["values"]) > 1 else text


def print_probe_table(result: ProbeResult, console: Console | None = None) -> None:
    """A rich table of a probe.json-shaped result (one row per record, one line per metric); the
    messages of records that did not run follow the table."""
    console = console or Console()
    table = Table(title=f"probes: {result.get('run', '')} ({result.get('checkpoint', {}).get('path', '')})")
    for column in ("dataset", "protocol", "layers", "metric", "value", "n train/test", "s", "status"):
        table.add_column(
            column,
            justify="right" if column in ("value", "s") else "left",
            no_wrap=column in ("metric", "value", "status"),
        )
    notes = []
    for record in result.get("results", []):
        metrics = record.get("metrics") or {}
        names = "\n".join(metrics) or "-"
        values = "\n".join(_format_metric(s, name.startswith("acc")) for name, s in metrics.items()) or "-"
        status = record["status"] if record["status"] == "ok" else f"[red]{record['status']}[/red]"
        if record.get("message"):
            notes.append(f"[red]{record['dataset']}[/red] ({record['protocol']}): {record['message']}")
        sizes = f"{record['n_train']}/{record['n_test']}" if record.get("n_train") is not None else "-"
        seconds = f"{record['seconds']:.1f}" if record.get("seconds") is not None else "-"
        table.add_row(
            record["dataset"],
            record["protocol"],
            ",".join(map(str, record["layers"])),
            names,
            values,
            sizes,
            seconds,
            status,
        )
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)
