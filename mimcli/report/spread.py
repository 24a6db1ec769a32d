"""Seed spread under each accuracy table: each regularised row minus its baseline row, with a 95 % interval.

The baseline of a row is the row of the same table with the same method and the same settings except
the regulariser (regularizer.kind = none). Differences use Welch's t-interval over training seeds
(mimcli/report/stats.py); a row with n = 1 gets a line saying that no spread is known.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mimcli.report.stats import LEVEL, welch_interval

if TYPE_CHECKING:
    from mimcli.report.cells import AccuracyTable, Row


def _without_regularizer(settings: dict[str, Any]) -> str:
    return json.dumps(
        {k: v for k, v in settings.items() if not k.startswith("regularizer.")}, sort_keys=True, default=str
    )


def baseline_of(table: AccuracyTable, row: Row) -> Row | None:
    """The unregularised row that `row` should be compared with, or None (row is a baseline, or none exists)."""
    config = row.group.config
    if config.regularizer.kind == "none" or row.group.foreign:
        return None
    same_method = [
        r
        for r in table.rows
        if r.group.config.regularizer.kind == "none"
        and r.group.config.method.name == config.method.name
        and not r.group.foreign
    ]
    key = _without_regularizer(row.group.settings)
    exact = [r for r in same_method if _without_regularizer(r.group.settings) == key]
    candidates = exact or same_method
    return candidates[0] if candidates else None


def spread_lines(table: AccuracyTable) -> list[str]:
    """One line per regularised row (difference to its baseline per column) and one per row with n = 1."""
    lines = []
    single = [r.label for r in table.rows if len(r.group.runs) == 1]
    if single:
        lines.append(f"n = 1 (no spread is known, no error bar drawn): {', '.join(single)}.")
    for row in table.rows:
        base = baseline_of(table, row)
        if base is None:
            continue
        parts = []
        for column in table.columns:
            cell, ref = row.cells.get(column.key), base.cells.get(column.key)
            if cell is None or ref is None:
                continue
            parts.append(f"{column.header} {welch_interval(cell.values, ref.values).text(column.digits)}")
        if parts:
            lines.append(
                f"{row.label} - {base.label} (n {len(row.group.runs)} vs {len(base.group.runs)}; "
                f"{LEVEL:.0%} Welch t-interval over training seeds): {'; '.join(parts)}."
            )
    return lines
