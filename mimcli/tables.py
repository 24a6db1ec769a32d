"""Tables that stay readable in a narrow terminal or a log (60 columns and up) instead of ending cells in '…'.

Every table `mim` prints goes through `fit_table`. Columns that name a row (`key`) are repeated in
every part; the other columns are packed, in order and keeping each `group` together, into parts that
fit the width, so a wide table is stacked into "title (1/2)", "title (2/2)" rather than squeezed.
When even the key columns and one group do not fit, the key columns are stacked into one column, one
value per line under one header line each. Free text (`wrap`: descriptions, paths) wraps on words;
nothing is ever cut: a word longer than its column folds onto the next line. Notes under a table are
plain left-aligned lines that wrap at the console's width (`notes`), not a centred caption.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

PAD = 3  # per column: one space of padding either side and one rule
EDGE = 1  # the table's left rule
WRAP_MIN = 20  # free-text columns get at least this much before they wrap


@dataclass(frozen=True)
class Col:
    header: str
    justify: Literal["left", "right"] = "left"
    key: bool = False  # names the row: in every part, never cut
    wrap: bool = False  # free text: wraps on words at whatever width is left
    group: str | None = None  # columns of one group stay in one part (a metric and its value)
    style: str | None = None


def text_width(text: str) -> int:
    """The widest line of a cell as printed (markup removed)."""
    return max((Text.from_markup(line).cell_len for line in text.split("\n")), default=0)


def need(column: Col, cells: Iterable[str]) -> int:
    """Columns a column takes: its widest line (wrapping ones: up to WRAP_MIN) or header word, plus PAD."""
    widest = max([text_width(c) for c in cells] + [0])
    if column.wrap:
        widest = min(widest, WRAP_MIN)
    return max([widest] + [len(word) for word in column.header.split()]) + PAD


def fold_header(column: Col, cells: Iterable[str]) -> Col:
    """A column that never wraps its cells (no_wrap also holds for the header): its header broken into
    lines at words, no wider than the column, so a long header does not widen a narrow column."""
    if column.wrap:
        return column
    return replace(column, header=textwrap.fill(column.header, need(column, cells) - PAD, break_long_words=False))


def _units(columns: Sequence[Col]) -> list[list[int]]:
    """Non-key column indexes, one list per unit that must stay in one part."""
    units: list[list[int]] = []
    for index, column in enumerate(columns):
        if column.key:
            continue
        if column.group is not None and units and columns[units[-1][0]].group == column.group:
            units[-1].append(index)
        else:
            units.append([index])
    return units


def plan_parts(columns: Sequence[Col], rows: Sequence[Sequence[str]], width: int) -> tuple[bool, list[list[int]]]:
    """(stack the key columns into one?, the non-key column indexes of each part) for `width` columns.
    A part too wide even alone (a cell wider than the console) comes back on its own; fit_table lets
    its columns fold so that the key columns stay whole."""
    needs = [need(c, [row[i] for row in rows]) for i, c in enumerate(columns)]
    keys = [i for i, c in enumerate(columns) if c.key]
    units = _units(columns)
    widest_unit = max([sum(needs[i] for i in unit) for unit in units] + [0])
    fixed = EDGE + sum(needs[i] for i in keys)
    stack_keys = len(keys) > 1 and fixed + widest_unit > width
    if stack_keys:
        fixed = EDGE + max(need(columns[i], [row[i] for row in rows]) for i in keys)
    parts: list[list[int]] = [[]]
    used = fixed
    for unit in units:
        cost = sum(needs[i] for i in unit)
        if parts[-1] and used + cost > width:
            parts.append([])
            used = fixed
        parts[-1].extend(unit)
        used += cost
    return stack_keys, parts


def fit_table(
    title: str | None,
    columns: Sequence[Col],
    rows: Sequence[Sequence[str]],
    width: int,
    *,
    sections: Iterable[int] = (),
    notes: Sequence[str] = (),
    show_header: bool = True,
) -> list[RenderableType]:
    """The table as one or more rich tables that fit `width`, then its notes (markup allowed) as lines.

    `sections`: indexes of the rows a rule goes above (blocks of rows)."""
    stack_keys, parts = plan_parts(columns, rows, width)
    needs = [need(c, [row[i] for row in rows]) for i, c in enumerate(columns)]
    columns = [fold_header(c, [row[i] for row in rows]) for i, c in enumerate(columns)]
    keys = [i for i, c in enumerate(columns) if c.key]
    above = set(sections)
    out: list[RenderableType] = []
    for number, part in enumerate(parts, start=1):
        name = f"{title} ({number}/{len(parts)})" if title and len(parts) > 1 else title
        table = Table(title=name, show_header=show_header, show_lines=stack_keys)  # a rule between rows
        shown: list[tuple[Col, list[int]]] = []
        if stack_keys:
            header = "\n".join(columns[i].header for i in keys)  # one line per key, as in the cells
            shown.append((replace(columns[keys[0]], header=header), keys))
        else:
            shown += [(columns[i], [i]) for i in keys]
        key_width = max(needs[i] for i in keys) if stack_keys else sum(needs[i] for i in keys)
        if EDGE + key_width + sum(needs[i] for i in part) > width:  # too wide alone: these fold, the keys stay
            shown += [(replace(columns[i], wrap=True), [i]) for i in part]
        else:
            shown += [(columns[i], [i]) for i in part]
        for column, _ in shown:
            table.add_column(
                column.header, justify=column.justify, overflow="fold", no_wrap=not column.wrap, style=column.style
            )
        for index, row in enumerate(rows):
            if index in above and index > 0:
                table.add_section()
            table.add_row(*("\n".join(row[i] for i in indexes) for _, indexes in shown))  # stacked keys: line per key
        out.append(table)
    out.extend(note_lines(notes))
    return out


def note_lines(notes: Sequence[str]) -> list[RenderableType]:
    """Notes under a table: left-aligned text that wraps at the console's width."""
    return [Text.from_markup(note, justify="left") for note in notes]
