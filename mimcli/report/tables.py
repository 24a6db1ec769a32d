"""Building tables: accuracy tables per source data set, best per block, reference numbers, sweeps, the report."""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimcli.config import RunConfig
from mimcli.errors import UsageError
from mimcli.report.collect import Run, collect_runs, preferred_record, probe_signature, record_value, source_key
from mimcli.report.constants import (DAGGER, DATASET_ORDER, DISPLAY, EPOCHS, LAMBDA, MEAN, METRICS,
                                     MODEL_PROTOCOL)
from mimcli.report.groups import Group, distinguishing_labels, frozen, group_runs
from mimcli.report.reference import load_reference, reference_value
from mimcli.report.spread import spread_lines


# --------------------------------------------------------------------------------------------- tables


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
            text = DISPLAY.get(self.key, self.key)
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
        return self.group.config.method.name


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
        name = f"image folder {Path(arg).name}" if kind == "imagefolder" else DISPLAY.get(self.source, self.source)
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


def is_source(dataset: str, config: RunConfig) -> bool:
    kind, _, arg = dataset.partition(":")
    if config.data.dataset == "imagefolder":
        return kind == "imagefolder" and os.path.normpath(arg) == os.path.normpath(config.data.root)
    return kind == config.data.dataset


def column_order(column: Column) -> tuple:
    index = DATASET_ORDER.index(column.key) if column.key in DATASET_ORDER else len(DATASET_ORDER)
    return ({"source": 0, "transfer": 1, "mean": 2}[column.role], index, column.key)


def majority(signatures: list[str]) -> str:
    return Counter(signatures).most_common(1)[0][0]


def describe_differences(dicts: list[dict[str, Any]], unit: str) -> str:
    """'model.width: 8 (2 rows), 16 (1 row)' for the keys whose values differ."""
    parts = []
    for key in sorted({k for d in dicts for k in d}):
        counts = Counter(frozen(d.get(key)) for d in dicts)
        if len(counts) > 1:
            shown = ", ".join(f"{shorten(json.loads(v))} ({plural(n, unit)})" for v, n in counts.items())
            parts.append(f"{key}: {shown}")
    return "; ".join(parts)


def plural(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def shorten(value: Any, width: int = 40) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def build_table(source: str, groups: list[Group], metric: str, warnings: list[str],
                reference: dict[str, Any] | None = None) -> AccuracyTable:
    """The accuracy table of one source data set (rows: groups; columns: probe data sets + transfer mean)."""
    labels = distinguishing_labels([(g.model, g.settings) for g in groups])
    for group, label in zip(groups, labels):
        group.label = label
    groups = sorted(groups, key=Group.order)
    config = groups[0].config
    # every run's chosen record per data set
    chosen: dict[int, dict[str, dict[str, Any]]] = {}
    tasks: dict[str, str] = {}
    for group in groups:
        for run in group.runs:
            per_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for record in run.records:
                per_dataset[record["dataset"]].append(record)
            picks = {name: preferred_record(recs, metric) for name, recs in per_dataset.items()}
            chosen[id(run)] = {name: rec for name, rec in picks.items() if rec is not None}
            for name, rec in chosen[id(run)].items():
                tasks.setdefault(name, "regression" if rec.get("protocol") == "regression" else "classification")
    columns = [Column(name, task, "source" if is_source(name, config) else "transfer") for name, task in tasks.items()]
    transfer = sorted((c for c in columns if c.role == "transfer" and c.task == "classification"), key=column_order)
    if transfer:
        columns.append(Column(MEAN, "mean", "mean"))
    columns.sort(key=column_order)
    table = AccuracyTable(source, columns, [])
    # cells, with per-column probe-protocol checks
    signatures: dict[str, dict[int, str]] = defaultdict(dict)
    for group in groups:
        for run in group.runs:
            for name, rec in chosen[id(run)].items():
                signatures[name][id(run)] = frozen(probe_signature(rec))
    for group in groups:
        cells: dict[str, Cell] = {}
        for column in columns:
            if column.role == "mean":
                continue
            picked = [(run, chosen[id(run)].get(column.key)) for run in group.runs]
            values = [record_value(rec, metric) for _, rec in picked if rec is not None]
            if values:
                common = majority(list(signatures[column.key].values()))
                flagged = any(rec is not None and signatures[column.key][id(run)] != common for run, rec in picked)
                cells[column.key] = Cell(values, flagged)
        if transfer:
            means = []
            for run in group.runs:
                values = [record_value(chosen[id(run)][c.key], metric) for c in transfer if c.key in chosen[id(run)]]
                if len(values) == len(transfer):
                    means.append(sum(values) / len(values))
            if means:
                cells[MEAN] = Cell(means, any(cells[c.key].flagged for c in transfer if c.key in cells))
            if len(means) < len(group.runs):
                warnings.append(f"{table.title}: {group.label}: transfer mean over {len(means)} of {len(group.runs)} "
                                f"runs (the others lack a transfer data set)")
        table.rows.append(Row(group, cells))
    # model-level protocol (backbone, width, image size, stem) across rows
    protocols = [{k: g.settings.get(k) for k in MODEL_PROTOCOL} for g in groups]
    common = majority([frozen(p) for p in protocols])
    for row, protocol in zip(table.rows, protocols):
        row.flagged = frozen(protocol) != common
    if any(row.flagged for row in table.rows):
        warnings.append(f"{table.title}: rows trained with different protocols, marked {DAGGER}: "
                        f"{describe_differences(protocols, 'row')}")
    for column in columns:
        sigs = signatures.get(column.key, {})
        if len(set(sigs.values())) > 1:
            described = describe_differences([json.loads(s) for s in sigs.values()], "run")
            warnings.append(f"{table.title}: column {column.header} mixes probe protocols, marked {DAGGER}: "
                            f"{described}")
    table.best = best_per_block(table)
    table.spread = spread_lines(table)
    if reference is not None:
        attach_reference(table, reference)
    return table


def best_per_block(table: AccuracyTable) -> set[tuple[int, str]]:
    """(row index, column) of the best value (as printed) per block of rows sharing a base method."""
    best = set()
    blocks: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(table.rows):
        blocks[row.block].append(index)
    for indices in blocks.values():
        for column in table.columns:
            shown = {i: round(table.rows[i].cells[column.key].mean, column.digits)
                     for i in indices if column.key in table.rows[i].cells}
            if len(shown) < 2:
                continue
            top = max(shown.values())
            best.update((i, column.key) for i, value in shown.items() if value == top)
    return best


def attach_reference(table: AccuracyTable, reference: dict[str, Any]) -> None:
    transfer = [c.key for c in table.columns if c.role == "transfer" and c.task == "classification"]
    for row in table.rows:
        model = row.group.model
        for key, cell in row.cells.items():
            if key == MEAN:
                refs = [reference_value(reference, table.source, model, k) for k in transfer]
                cell.reference = sum(refs) / len(refs) if refs and None not in refs else None
            else:
                cell.reference = reference_value(reference, table.source, model, key)
    if table.has_reference:
        table.notes.append(f"Reference: {reference_label(reference)}: {reference.get('protocol')}.")
        ours = sorted({row.group.config.train.epochs for row in table.rows})
        if reference.get("epochs") and ours != [reference["epochs"]]:
            table.notes.append(f"Our runs trained {', '.join(map(str, ours))} epochs, the reference "
                               f"{reference['epochs']}.")
    else:
        table.notes.append(f"No {reference_label(reference)} numbers exist for {table.title}: "
                           "comparison left out.")


def reference_label(reference: dict[str, Any]) -> str:
    """'paper (Wang et al., CVPR 2022), 200 epochs': which reference, at what training length."""
    epochs = reference.get("epochs")
    return f"{reference.get('title')}" + (f", {epochs} epochs" if epochs else "")


def drop_duplicate_seeds(groups: list[Group], warnings: list[str]) -> None:
    """Pool a row only over different training seeds: runs with the same seed and settings are repeats
    of one measurement, so the first (by name) is kept and the others are named in a warning."""
    for group in groups:
        kept: dict[int, Run] = {}
        for run in group.runs:
            first = kept.setdefault(run.config.train.seed, run)
            if first is not run:
                warnings.append(f"{run.name} repeats {first.name} (same config, train.seed={run.config.train.seed}): "
                                "counted once; pool over different seeds")
        group.runs = list(kept.values())


# --------------------------------------------------------------------------------------------- sweeps


@dataclass
class SweepPoint:
    x: float
    row: Row


@dataclass
class Series:
    label: str
    points: list[SweepPoint]


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
    series = [Series(label, sorted((SweepPoint(float(r.group.settings[axis]), r) for r in rows), key=lambda p: p.x))
              for label, rows in zip(labels, members)]
    series.sort(key=lambda s: s.points[0].row.group.order())
    baselines: list[Row] = []
    if axis == LAMBDA:
        def strip(values: dict[str, Any]) -> str:
            return frozen({k: v for k, v in values.items() if not k.startswith("regularizer.")})

        wanted = {strip(rows[0].group.settings) for rows in members}
        baselines = [r for r in table.rows
                     if r.group.config.regularizer.kind == "none" and strip(r.group.settings) in wanted]
    return SweepTable(axis, table, series, baselines)


# --------------------------------------------------------------------------------------------- report


@dataclass
class Report:
    metric: str
    runs: list[Run]
    tables: list[AccuracyTable]
    sweeps: list[SweepTable]
    warnings: list[str]
    reference: dict[str, Any] | None = None
    compare: str | None = None


def build_report(paths: list[Path], metric: str = "acc_best_test", compare: str | None = None,
                 warnings: list[str] | None = None) -> Report:
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    reference = load_reference(compare) if compare is not None else None
    warnings = warnings if warnings is not None else []
    runs_ = collect_runs(paths, warnings)
    if not runs_:
        raise UsageError(f"no finished run with probe results under {', '.join(map(str, paths))} "
                         f"({len(warnings)} warnings above)")
    by_source: dict[str, list[Run]] = defaultdict(list)
    for run in runs_:
        by_source[source_key(run.config)].append(run)
    order = {name: i for i, name in enumerate(DATASET_ORDER)}
    tables = []
    for source, members in sorted(by_source.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])):
        groups = group_runs(members)
        drop_duplicate_seeds(groups, warnings)
        tables.append(build_table(source, groups, metric, warnings, reference))
    sweeps = [s for axis in (LAMBDA, EPOCHS) for t in tables if (s := build_sweep(t, axis)) is not None]
    return Report(metric, runs_, tables, sweeps, warnings, reference, compare)


def protocol_lines(report: Report) -> list[tuple[str, str]]:
    """(what, value) pairs describing how the runs were trained and probed, read from the runs."""

    def distinct(values: list[Any]) -> str:
        counts = Counter(map(str, values))
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{v} ({plural(n, 'run')})" for v, n in sorted(counts.items()))

    cfgs = [run.config for run in report.runs]
    probes = [r for run in report.runs for r in run.records]
    lines = [
        ("runs", str(len(report.runs))),
        ("backbone", distinct([f"{c.model.backbone}, width {c.model.width}, stem {c.model.stem}" for c in cfgs])),
        ("pretraining data", distinct([f"{source_key(c)} at {c.data.image_size} px"
                                       + (f", subset {c.data.subset}" if c.data.subset else "") for c in cfgs])),
        ("method", distinct([run.model for run in report.runs])),
        ("epochs", distinct([c.train.epochs for c in cfgs])),
        ("batch size", distinct([c.train.batch_size for c in cfgs])),
        ("optimiser", distinct([f"{c.train.optimizer} lr {c.train.lr:g}, weight decay {c.train.weight_decay:g}, "
                                f"{c.train.schedule} schedule" for c in cfgs])),
        ("training seeds", ", ".join(map(str, sorted({c.train.seed for c in cfgs})))),
    ]
    for protocol in sorted({r.get("protocol") for r in probes}, key=str):
        group = [r for r in probes if r.get("protocol") == protocol]
        params = [{k: v for k, v in (r.get("params") or {}).items() if k not in ("selection", "seeds")} for r in group]
        text = distinct([", ".join(f"{k} {v}" for k, v in p.items()) for p in params])
        layers = distinct([",".join(map(str, r.get("layers") or [])) for r in group])
        seeds = sorted({s for r in group for s in (r.get("params") or {}).get("seeds", [])})
        lines.append((f"{protocol} probe", f"layers {layers}; {text}" + (f"; probe seeds {seeds}" if seeds else "")))
        selections = {r.get("params", {}).get("selection") for r in group} - {None}
        lines.extend((f"{protocol} selection", s) for s in sorted(selections))
    lines.append(("table metric", f"{report.metric}: {METRICS[report.metric]}; kNN: acc; regression: R²"))
    return lines
