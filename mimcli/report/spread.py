"""Seed spread under each accuracy table: each regularised row minus its baseline row, and each trained
row minus random init, with a 95 % interval.

The baseline of a row is the row of the same table with the same method and the same settings except
the regulariser (regularizer.kind = none). Its random init is the untrained row (train.epochs = 0) with
the same settings but training length and regulariser, else one of the same method, else the table's
first. Differences use Welch's t-interval over training seeds (mimcli/report/stats.py); a row with
n = 1 gets a line saying that no spread is known, and its difference says "no interval".
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mimcli.report.stats import LEVEL, welch_interval

if TYPE_CHECKING:
    from mimcli.report.cells import AccuracyTable, Row


def _without(settings: dict[str, Any], prefixes: tuple[str, ...]) -> str:
    return json.dumps({k: v for k, v in settings.items() if not k.startswith(prefixes)}, sort_keys=True, default=str)


def _without_regularizer(settings: dict[str, Any]) -> str:
    return _without(settings, ("regularizer.",))


UNTRAINED_KEYS = ("regularizer.", "train.epochs")  # what an untrained backbone does not depend on


def baseline_of(table: AccuracyTable, row: Row) -> Row | None:
    """The unregularised row that `row` should be compared with, or None (row is a baseline, or none exists)."""
    config = row.group.config
    if config.regularizer.kind == "none" or row.group.foreign or row.group.random_init:
        return None
    same_method = [
        r
        for r in table.rows
        if r.group.config.regularizer.kind == "none"
        and r.group.config.method.name == config.method.name
        and not r.group.foreign
        and not r.group.random_init
    ]
    key = _without_regularizer(row.group.settings)
    exact = [r for r in same_method if _without_regularizer(r.group.settings) == key]
    candidates = exact or same_method
    return candidates[0] if candidates else None


def random_init_of(table: AccuracyTable, row: Row) -> Row | None:
    """The untrained row a trained `row` is compared with, or None (row is untrained or foreign, or none exists)."""
    if row.group.foreign or row.group.random_init:
        return None
    untrained = [r for r in table.rows if r.group.random_init]
    same_method = [r for r in untrained if r.group.config.method.name == row.group.config.method.name]
    key = _without(row.group.settings, UNTRAINED_KEYS)
    exact = [r for r in same_method if _without(r.group.settings, UNTRAINED_KEYS) == key]
    candidates = exact or same_method or untrained
    return candidates[0] if candidates else None


def difference_line(table: AccuracyTable, row: Row, base: Row) -> str | None:
    """`row - base` per column with its Welch interval, or None where they share no column."""
    parts = []
    for column in table.columns:
        cell, ref = row.cells.get(column.key), base.cells.get(column.key)
        if cell is None or ref is None:
            continue
        parts.append(f"{column.header} {welch_interval(cell.values, ref.values).text(column.digits)}")
    if not parts:
        return None
    return (
        f"{row.label} - {base.label} (n {len(row.group.runs)} vs {len(base.group.runs)}; "
        f"{LEVEL:.0%} Welch t-interval over training seeds): {'; '.join(parts)}."
    )


def spread_lines(table: AccuracyTable) -> list[str]:
    """One line per row with n = 1, per regularised row (difference to its baseline per column) and per
    trained row when the table has a random init (trained - random init per column)."""
    lines = []
    single = [r.label for r in table.rows if len(r.group.runs) == 1]
    if single:
        lines.append(f"n = 1 (no spread is known, no error bar drawn): {', '.join(single)}.")
    for find in (baseline_of, random_init_of):
        for row in table.rows:
            base = find(table, row)
            line = None if base is None else difference_line(table, row, base)
            if line:
                lines.append(line)
    return lines
