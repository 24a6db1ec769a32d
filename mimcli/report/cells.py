"""The accuracy table's data: columns (data sets), cells (per-seed values), rows (one model each).

Types only, so that building (accuracy.py), spread lines (spread.py) and rendering (render.py) all
import them without a cycle."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from mimcli.data.transfer import display_name
from mimcli.report.constants import DAGGER, MEAN
from mimcli.report.groups import Group


@dataclass
class Column:
    key: str  # data set id, or MEAN
    task: str  # classification | regression | mean
    role: str  # source | transfer | mean

    @property
    def header(self) -> str:
        kind, _, arg = self.key.partition(":")
        if self.key == MEAN:
            text = MEAN
        elif kind == "imagefolder":
            text = f"imagefolder:{Path(arg).name}"
        else:
            text = display_name(self.key)
        return f"{text} (R²)" if self.task == "regression" else text

    @property
    def digits(self) -> int:
        return 3 if self.task == "regression" else 2


@dataclass
class Cell:
    values: list[float]  # one per run of the row
    flagged: bool = False
    reference: float | None = None

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def std(self) -> float:
        n = len(self.values)
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (n - 1)) if n > 1 else 0.0

    @property
    def difference(self) -> float | None:
        return None if self.reference is None else self.mean - self.reference

    def text(self, digits: int) -> str:
        text = f"{self.mean:.{digits}f}"
        if len(self.values) > 1:
            text += f" ± {self.std:.{digits}f}"
        return text + (DAGGER if self.flagged else "")


@dataclass
class Row:
    group: Group
    cells: dict[str, Cell]
    flagged: bool = False

    @property
    def label(self) -> str:
        return self.group.label + (DAGGER if self.flagged else "")

    @property
    def block(self) -> str:
        return "foreign" if self.group.foreign else self.group.config.method.name


@dataclass
class AccuracyTable:
    source: str
    columns: list[Column]
    rows: list[Row]
    best: set[tuple[int, str]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    spread: list[str] = field(default_factory=list)  # seed spread and differences to baselines (report/spread.py)

    @property
    def title(self) -> str:
        kind, _, arg = self.source.partition(":")
        name = f"image folder {Path(arg).name}" if kind == "imagefolder" else display_name(self.source)
        return f"{name} pretraining"

    def column(self, key: str) -> Column | None:
        return next((c for c in self.columns if c.key == key), None)

    @property
    def has_reference(self) -> bool:
        """Whether any cell has a reference number (--compare): otherwise the comparison is left out."""
        return any(cell.reference is not None for row in self.rows for cell in row.cells.values())

    @property
    def primary(self) -> Column | None:
        """The source column that sweeps and bar charts plot: the first source classification column."""
        sources = [c for c in self.columns if c.role == "source"]
        return next((c for c in sources if c.task == "classification"), sources[0] if sources else None)
