"""Accuracy against lambda or pretraining epochs: series of table rows that differ only in that setting."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from mimcli.report.cells import AccuracyTable, Row
from mimcli.report.constants import LAMBDA
from mimcli.report.groups import distinguishing_labels, frozen


@dataclass
class SeriesPoint:
    x: float
    row: Row


@dataclass
class Series:
    label: str
    points: list[SeriesPoint]


@dataclass
class SweepTable:
    axis: str  # LAMBDA | EPOCHS
    table: AccuracyTable
    series: list[Series]
    baselines: list[Row]

    @property
    def symbol(self) -> str:
        return "λ" if self.axis == LAMBDA else "epochs"

    @property
    def title(self) -> str:
        return f"Accuracy against {self.symbol}: {self.table.title}"


def build_sweep(table: AccuracyTable, axis: str) -> SweepTable | None:
    """Series of rows that differ only in `axis`; None when no model was run at two or more values."""
    families: dict[str, list[Row]] = defaultdict(list)
    for row in table.rows:
        if axis in row.group.settings:
            rest = {k: v for k, v in row.group.settings.items() if k != axis}
            families[frozen(rest)].append(row)
    families = {k: rows for k, rows in families.items() if len({r.group.settings[axis] for r in rows}) > 1}
    if not families:
        return None
    members = list(families.values())
    labels = distinguishing_labels([(rows[0].group.model, rows[0].group.settings) for rows in members], (axis,))
    series = [
        Series(label, sorted((SeriesPoint(float(r.group.settings[axis]), r) for r in rows), key=lambda p: p.x))
        for label, rows in zip(labels, members)
    ]
    series.sort(key=lambda s: s.points[0].row.group.order())
    baselines: list[Row] = []
    if axis == LAMBDA:

        def strip(values: dict[str, Any]) -> str:
            return frozen({k: v for k, v in values.items() if not k.startswith("regularizer.")})

        wanted = {strip(rows[0].group.settings) for rows in members}
        baselines = [
            r
            for r in table.rows
            if r.group.config.regularizer.kind == "none" and not r.group.foreign and strip(r.group.settings) in wanted
        ]
    return SweepTable(axis, table, series, baselines)
