"""Building one accuracy table per source data set: cells from probe records, best per block,
reference numbers and duplicate seeds."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from typing import Any

from mimcli.config import RunConfig
from mimcli.config.datasets import dataset_records
from mimcli.report.cells import AccuracyTable, Cell, Column, Row
from mimcli.report.collect import Run, preferred_record, probe_signature, record_value
from mimcli.report.constants import DAGGER, MEAN, MODEL_PROTOCOL
from mimcli.report.groups import Group, frozen, label_groups
from mimcli.report.reference import reference_value
from mimcli.report.spread import spread_lines


def is_source(dataset: str, config: RunConfig) -> bool:
    kind, _, arg = dataset.partition(":")
    if config.data.dataset == "imagefolder":
        return kind == "imagefolder" and os.path.normpath(arg) == os.path.normpath(config.data.root)
    return kind == config.data.dataset


def column_order(column: Column) -> tuple[Any, ...]:
    order = list(dataset_records())  # registration order: the paper's, then any registered later
    index = order.index(column.key) if column.key in order else len(order)
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


Chosen = dict[int, dict[str, dict[str, Any]]]  # id(run) -> data set -> the probe record the table reads


def choose_records(groups: list[Group], metric: str) -> tuple[Chosen, dict[str, str]]:
    """Every run's preferred record per data set, and each data set's task (classification | regression)."""
    chosen: Chosen = {}
    tasks: dict[str, str] = {}
    for run in (run for group in groups for run in group.runs):
        per_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in run.records:
            per_dataset[record["dataset"]].append(record)
        features = run.config.probe.features
        picks = {name: preferred_record(recs, metric, features) for name, recs in per_dataset.items()}
        chosen[id(run)] = {name: rec for name, rec in picks.items() if rec is not None}
        for name, rec in chosen[id(run)].items():
            tasks.setdefault(name, "regression" if rec.get("protocol") == "regression" else "classification")
    return chosen, tasks


def table_columns(tasks: dict[str, str], config: RunConfig) -> tuple[list[Column], list[Column]]:
    """The table's columns in order (source, transfer, transfer mean) and the transfer classification ones."""
    columns = [Column(name, task, "source" if is_source(name, config) else "transfer") for name, task in tasks.items()]
    transfer = sorted((c for c in columns if c.role == "transfer" and c.task == "classification"), key=column_order)
    if transfer:
        columns.append(Column(MEAN, "mean", "mean"))
    columns.sort(key=column_order)
    return columns, transfer


def group_cells(
    group: Group, columns: list[Column], chosen: Chosen, signatures: dict[str, dict[int, str]], metric: str
) -> dict[str, Cell]:
    """One row's cells per data set column, flagged where a run's probe protocol is not its column's majority."""
    cells: dict[str, Cell] = {}
    for column in columns:
        if column.role == "mean":
            continue
        picked = [(run, chosen[id(run)].get(column.key)) for run in group.runs]
        values = [v for _, rec in picked if rec is not None and (v := record_value(rec, metric)) is not None]
        if values:
            common = majority(list(signatures[column.key].values()))
            flagged = any(rec is not None and signatures[column.key][id(run)] != common for run, rec in picked)
            cells[column.key] = Cell(values, flagged)
    return cells


def transfer_mean(group: Group, transfer: list[Column], chosen: Chosen, metric: str) -> list[float]:
    """Each run's mean over the transfer classification sets, for the runs that have all of them."""
    means = []
    for run in group.runs:
        records = chosen[id(run)]
        values = [v for c in transfer if c.key in records and (v := record_value(records[c.key], metric)) is not None]
        if len(values) == len(transfer):
            means.append(sum(values) / len(values))
    return means


def flag_protocols(table: AccuracyTable, signatures: dict[str, dict[int, str]], warnings: list[str]) -> None:
    """Dagger the rows whose model protocol (backbone, width, image size, stem) is not the majority's, and
    warn about them and about columns that mix probe protocols. A model mim did not train is a different
    model by design, and its own row says what it is."""
    trained = [(row, {k: row.group.settings.get(k) for k in MODEL_PROTOCOL}) for row in table.rows]
    trained = [(row, protocol) for row, protocol in trained if not row.group.foreign]
    protocols = [protocol for _, protocol in trained]
    common = majority([frozen(p) for p in protocols]) if protocols else ""
    for row, protocol in trained:
        row.flagged = frozen(protocol) != common
    if any(row.flagged for row in table.rows):
        warnings.append(
            f"{table.title}: rows trained with different protocols, marked {DAGGER}: "
            f"{describe_differences(protocols, 'row')}"
        )
    for column in table.columns:
        sigs = signatures.get(column.key, {})
        if len(set(sigs.values())) > 1:
            described = describe_differences([json.loads(s) for s in sigs.values()], "run")
            warnings.append(
                f"{table.title}: column {column.header} mixes probe protocols, marked {DAGGER}: {described}"
            )


def build_table(
    source: str, groups: list[Group], metric: str, warnings: list[str], reference: dict[str, Any] | None = None
) -> AccuracyTable:
    """The accuracy table of one source data set (rows: groups; columns: probe data sets + transfer mean)."""
    label_groups(groups)
    groups = sorted(groups, key=Group.order)
    chosen, tasks = choose_records(groups, metric)
    columns, transfer = table_columns(tasks, groups[0].config)
    table = AccuracyTable(source, columns, [])
    signatures: dict[str, dict[int, str]] = defaultdict(dict)
    for run in (run for group in groups for run in group.runs):
        for name, rec in chosen[id(run)].items():
            signatures[name][id(run)] = frozen(probe_signature(rec))
    for group in groups:
        cells = group_cells(group, columns, chosen, signatures, metric)
        if transfer:
            means = transfer_mean(group, transfer, chosen, metric)
            if means:
                cells[MEAN] = Cell(means, any(cells[c.key].flagged for c in transfer if c.key in cells))
            if len(means) < len(group.runs):
                warnings.append(
                    f"{table.title}: {group.label}: transfer mean over {len(means)} of {len(group.runs)} "
                    f"runs (the others lack a transfer data set)"
                )
        table.rows.append(Row(group, cells))
    flag_protocols(table, signatures, warnings)
    table.best = best_per_block(table)
    table.spread = spread_lines(table)
    if reference is not None:
        attach_reference(table, reference)
    return table


def best_per_block(table: AccuracyTable) -> set[tuple[int, str]]:
    """(row index, column) of the best value (as printed) per block of rows sharing a base method."""
    best: set[tuple[int, str]] = set()
    blocks: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(table.rows):
        blocks[row.block].append(index)
    for indices in blocks.values():
        for column in table.columns:
            shown = {
                i: round(table.rows[i].cells[column.key].mean, column.digits)
                for i in indices
                if column.key in table.rows[i].cells
            }
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
                known = [r for r in refs if r is not None]
                cell.reference = sum(known) / len(known) if refs and len(known) == len(refs) else None
            else:
                cell.reference = reference_value(reference, table.source, model, key)
    if table.has_reference:
        table.notes.append(f"Reference: {reference_label(reference)}: {reference.get('protocol')}.")
        ours = sorted({row.group.config.train.epochs for row in table.rows})
        if reference.get("epochs") and ours != [reference["epochs"]]:
            table.notes.append(
                f"Our runs trained {', '.join(map(str, ours))} epochs, the reference {reference['epochs']}."
            )
    else:
        table.notes.append(f"No {reference_label(reference)} numbers exist for {table.title}: comparison left out.")


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
                warnings.append(
                    f"{run.name} repeats {first.name} (same config, train.seed={run.config.train.seed}): "
                    "counted once; pool over different seeds"
                )
        group.runs = list(kept.values())
