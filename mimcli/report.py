"""`mim report`: gather finished, probed runs into the paper's tables, sweep tables, plots and files.

Reading (nothing here trains or probes):
  every run directory (a folder with config.toml) below the given paths, with its run.json
  (must say "finished"), probe.json (the probe records) and metrics.jsonl (loss curves). A run
  that cannot be read, is unfinished, has no probe results or has stale ones is skipped with a
  warning naming it.

Tables:
  accuracy  one table per source data set (the runs' data.dataset), one row per model
            (`describe_model`, plus the settings that tell rows of the same model apart, e.g.
            lambda), one column per probe data set: source first, then transfer sets, then the
            mean over the transfer (classification) sets. Runs whose configs differ only in
            train.seed (and execution details: device, precision, threads...) form one row:
            mean +- sample std over them. Best value per block (rows of one base method) is bold.
  lambda    source accuracy and transfer mean against regularizer.lambda, per model
  epochs    the same against train.epochs
Rows that differ in backbone / width / image size / stem, and cells whose probe protocol
(protocol, layers, probe hyper-parameters) differs from the rest of their column, are marked
with a dagger and named in a warning: never silently mixed.
"""

from __future__ import annotations

import csv
import importlib.resources
import io
import json
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mimcli import runs
from mimcli.config import RunConfig
from mimcli.errors import UsageError

FORMATS = ("table", "markdown", "json", "csv")
METRICS = {
    "acc_best_test": "best test accuracy over the probe's epochs (the paper's number, selected on the test set)",
    "acc_val_selected": "test accuracy at the epoch chosen on a held-out 10% of the train split (honest)",
}
COMPARE = ("paper", "report")
RECORD_FIELDS = ("run", "model", "method", "regularizer", "lambda", "epochs", "seed", "dataset", "task", "metric",
                 "value", "protocol", "layers")
MEAN = "transfer mean"
DAGGER = "†"
PLOTS_HINT = "plots need matplotlib: pip install 'mim[plots]'"

DATASET_ORDER = ("cifar10", "cifar100", "stl10", "dtd", "mnist", "fashionmnist", "cub200", "flowers102", "gtsrb",
                 "shapes:shape", "shapes:hue", "shapes:position")
DISPLAY = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "stl10": "STL10", "dtd": "DTD", "mnist": "MNIST",
           "fashionmnist": "FaMNIST", "cub200": "CUBirds", "flowers102": "VGGFlower", "gtsrb": "TrafficSigns",
           "shapes": "shapes", "imagefolder": "image folder"}
METHOD_ORDER = ("simclr", "byol", "barlow", "supervised")
REGULARIZER_ORDER = ("none", "rc", "lbe", "mib", "ip", "noise")

# Config keys that never split runs into different rows: names, paths and execution details.
IGNORED_KEYS = ("run.", "probe.", "train.seed", "train.device", "train.threads", "train.log_every", "train.compile",
                "train.channels_last", "train.precision", "train.save_epochs", "data.download")
# The regulariser / method keys each kind actually reads (the rest are defaults that do nothing).
REGULARIZER_USES = {"none": (), "noise": ("sigma",), "rc": ("lambda",),
                    "lbe": ("lambda", "sigma", "rho", "block_weights"), "mib": ("lambda", "sigma"), "ip": ("lambda",)}
METHOD_USES = {"simclr": ("temperature", "hidden_dim", "proj_dim"), "byol": ("base_momentum", "hidden_dim", "proj_dim"),
               "barlow": ("offdiag_weight", "hidden_dim", "proj_dim"), "supervised": ()}
MODEL_PROTOCOL = ("model.backbone", "model.width", "model.stem", "data.image_size")
LAMBDA = "regularizer.lambda"
EPOCHS = "train.epochs"


# --------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One finished run directory with its probe results."""

    path: Path
    name: str
    config: RunConfig
    records: list[dict[str, Any]]  # probe records with status "ok"
    metrics: list[dict[str, Any]]

    @property
    def model(self) -> str:
        from mimcli.train import describe_model

        return describe_model(self.config)

    @property
    def lam(self) -> float | None:
        return self.config.regularizer.lam if "lambda" in REGULARIZER_USES[self.config.regularizer.kind] else None


def display_name(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Every folder holding config.toml at or below the paths (a run's own subfolders are not searched)."""
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
        if path.is_file():
            if path.name != runs.CONFIG:
                raise UsageError(f"{path} is a file: pass run directories or folders holding them")
            path = path.parent
        for folder, subfolders, files in os.walk(path):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            if runs.CONFIG in files:
                found.setdefault(Path(folder).resolve(), Path(folder))
                subfolders[:] = []
    return list(found.values())


def load_run(path: Path, warnings: list[str]) -> Run | None:
    """The run, or None with a warning naming it when it is malformed, unfinished or not probed."""
    name = display_name(path)

    def skip(reason: str) -> None:
        warnings.append(f"skipped {name}: {reason}")

    try:
        config = runs.load_run_config(path)
    except UsageError as error:
        return skip(f"unreadable {runs.CONFIG} ({error})")
    try:
        status = runs.read_json(path / runs.STATUS)
    except FileNotFoundError:
        return skip(f"no {runs.STATUS} (not written by `mim pretrain`)")
    except (OSError, ValueError) as error:
        return skip(f"unreadable {runs.STATUS} ({error})")
    if not isinstance(status, dict) or status.get("status") != "finished":
        state = status.get("status", "?") if isinstance(status, dict) else "?"
        done = status.get("epochs_done", "?") if isinstance(status, dict) else "?"
        return skip(f"unfinished ({state}, {done} of {config.train.epochs} epochs)")
    probe_path = path / runs.PROBE
    if not probe_path.is_file():
        return skip(f"no probe results (run `mim probe {name}`)")
    try:
        probe = runs.read_json(probe_path)
        results = probe["results"]
        if not isinstance(results, list):
            raise TypeError("results is not a list")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return skip(f"unreadable {runs.PROBE} ({error})")
    if stale(path, probe):
        return skip(f"{runs.PROBE} is stale: the backbone changed after probing (run `mim probe {name}` again)")
    records = [r for r in results if isinstance(r, dict) and r.get("status") == "ok"
               and isinstance(r.get("dataset"), str) and isinstance(r.get("metrics"), dict) and r["metrics"]]
    failed = [f"{r.get('dataset', '?')} ({r.get('status', '?')})" for r in results if r not in records]
    if failed:
        warnings.append(f"{name}: no probe result for {', '.join(failed)}")
    if not records:
        return skip("no probe results with status ok")
    return Run(path, name, config, records, runs.read_metrics(path))


def stale(path: Path, probe: dict[str, Any]) -> bool:
    """The probed checkpoint file changed since probe.json was written (hashes only when it is newer)."""
    checkpoint = probe.get("checkpoint") or {}
    weights = path / str(checkpoint.get("path") or runs.BACKBONE)
    if not weights.is_file() or not checkpoint.get("sha256"):
        return False
    if weights.stat().st_mtime <= (path / runs.PROBE).stat().st_mtime:
        return False
    return runs.file_sha256(weights) != checkpoint["sha256"]


def collect_runs(paths: list[Path], warnings: list[str] | None = None) -> list[Run]:
    """Every readable, finished, probed run below the paths; the rest are named in `warnings`."""
    warnings = warnings if warnings is not None else []
    found = find_run_dirs(paths)
    if not found:
        raise UsageError(f"no run directories (folders with {runs.CONFIG}) under {', '.join(map(str, paths))}")
    loaded = [load_run(path, warnings) for path in found]
    return [run for run in loaded if run is not None]


# --------------------------------------------------------------------------------------------- values


def metric_key(record: dict[str, Any], metric: str) -> str:
    """The number a probe record contributes: linear -> `metric`, knn -> acc, regression -> r2."""
    return {"linear": metric, "knn": "acc", "regression": "r2"}.get(record.get("protocol"), metric)


def record_value(record: dict[str, Any], metric: str) -> float | None:
    summary = (record.get("metrics") or {}).get(metric_key(record, metric))
    if not isinstance(summary, dict) or not isinstance(summary.get("mean"), (int, float)):
        return None
    return float(summary["mean"])


def preferred_record(records: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """Of several records for one data set, the table shows linear (or regression) on layer 4 first."""
    usable = [r for r in records if record_value(r, metric) is not None]
    return min(usable, key=lambda r: (r.get("protocol") == "knn", r.get("layers") != [4]), default=None)


def probe_signature(record: dict[str, Any]) -> dict[str, Any]:
    """What must match for two probe numbers to be comparable (the probe seeds need not)."""
    params = {k: v for k, v in (record.get("params") or {}).items() if k != "seeds"}
    return {"protocol": record.get("protocol"), "layers": record.get("layers"), **params}


def records(runs_: list[Run], metric: str = "acc_best_test", reference: dict[str, Any] | None = None
            ) -> list[dict[str, Any]]:
    """Tidy records, one per (run, probe record): the JSON / CSV output."""
    out = []
    for run in runs_:
        cfg = run.config
        for record in run.records:
            value = record_value(record, metric)
            if value is None:
                continue
            row = {"run": run.name, "model": run.model, "method": cfg.method.name,
                   "regularizer": cfg.regularizer.kind, "lambda": run.lam, "epochs": cfg.train.epochs,
                   "seed": cfg.train.seed, "dataset": record["dataset"], "task": record.get("task"),
                   "metric": metric_key(record, metric), "value": value, "protocol": record.get("protocol"),
                   "layers": record.get("layers")}
            if reference is not None:
                ref = reference_value(reference, source_key(cfg), run.model, record["dataset"])
                row["reference"] = ref
                row["difference"] = None if ref is None else value - ref
            out.append(row)
    return out


# --------------------------------------------------------------------------------------------- groups


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings(config: RunConfig) -> dict[str, Any]:
    """The config keys that make a run a different experiment (seed, names and execution details left out)."""
    flat = flatten(config.to_dict())
    kind, method = config.regularizer.kind, config.method.name
    keep = {}
    for key, value in flat.items():
        section, _, rest = key.partition(".")
        name = rest.split(".")[0]
        if key.startswith(IGNORED_KEYS):
            continue
        if section == "regularizer" and name != "kind" and name not in REGULARIZER_USES[kind]:
            continue
        if section == "method" and name != "name" and name not in METHOD_USES[method]:
            continue
        if key.startswith("data.shapes.") and config.data.dataset != "shapes":
            continue
        if key == "data.root" and config.data.dataset != "imagefolder":
            continue
        keep[key] = value
    return keep


def frozen(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def source_key(config: RunConfig) -> str:
    return f"imagefolder:{config.data.root}" if config.data.dataset == "imagefolder" else config.data.dataset


@dataclass
class Group:
    """Runs that differ only in train.seed: one table row."""

    runs: list[Run]
    settings: dict[str, Any]
    label: str = ""

    @property
    def config(self) -> RunConfig:
        return self.runs[0].config

    @property
    def model(self) -> str:
        return self.runs[0].model

    def order(self) -> tuple:
        cfg = self.config
        return (METHOD_ORDER.index(cfg.method.name), REGULARIZER_ORDER.index(cfg.regularizer.kind),
                self.runs[0].lam or 0.0, cfg.train.epochs, self.label)


def group_runs(runs_: list[Run]) -> list[Group]:
    groups: dict[str, Group] = {}
    for run in runs_:
        values = settings(run.config)
        key = frozen(values)
        groups.setdefault(key, Group([], values)).runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: (r.config.train.seed, r.name))
    return list(groups.values())


def describe_setting(key: str, value: Any) -> str:
    if key == LAMBDA:
        return f"λ={value:g}"
    if key == EPOCHS:
        return f"{value} ep"
    return f"{key}={value}"


def distinguishing_labels(items: list[tuple[str, dict[str, Any]]], exclude: tuple[str, ...] = ()) -> list[str]:
    """Labels for (model, settings) items: the model, plus the settings that tell same-model items apart."""
    by_model: dict[str, list[int]] = defaultdict(list)
    for index, (model, _) in enumerate(items):
        by_model[model].append(index)
    labels = [model for model, _ in items]
    for model, indices in by_model.items():
        if len(indices) < 2:
            continue
        keys = sorted({k for i in indices for k in items[i][1]}, key=lambda k: (k != LAMBDA, k != EPOCHS, k))
        differing = [k for k in keys if k not in exclude
                     and len({frozen(items[i][1].get(k)) for i in indices}) > 1]
        for i in indices:
            parts = [describe_setting(k, items[i][1].get(k)) for k in differing]
            labels[i] = f"{model} ({', '.join(parts)})" if parts else model
    return labels


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

    @property
    def title(self) -> str:
        kind, _, arg = self.source.partition(":")
        name = f"image folder {Path(arg).name}" if kind == "imagefolder" else DISPLAY.get(self.source, self.source)
        return f"{name} pretraining"

    def column(self, key: str) -> Column | None:
        return next((c for c in self.columns if c.key == key), None)

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


# --------------------------------------------------------------------------------------------- reference


def load_reference(name: str) -> dict[str, Any]:
    """One reference table of mimcli/reference/paper.json: 'paper' or 'report'."""
    if name not in COMPARE:
        raise UsageError(f"--compare {name!r}: choose one of {', '.join(COMPARE)}")
    text = (importlib.resources.files("mimcli") / "reference" / "paper.json").read_text()
    return json.loads(text)["tables"][name]


def reference_value(reference: dict[str, Any], source: str, model: str, dataset: str) -> float | None:
    return reference.get("sources", {}).get(source, {}).get(model, {}).get(dataset)


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
    if table.source in reference.get("sources", {}):
        table.notes.append(f"Reference: {reference.get('title')}: {reference.get('protocol')}.")


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
    tables = [build_table(source, group_runs(members), metric, warnings, reference)
              for source, members in sorted(by_source.items(), key=lambda kv: (order.get(kv[0], 99), kv[0]))]
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


# --------------------------------------------------------------------------------------------- rendering


def cell_text(table: AccuracyTable, index: int, column: Column) -> str | None:
    cell = table.rows[index].cells.get(column.key)
    return None if cell is None else cell.text(column.digits)


def rich_tables(report: Report, plain: bool = False) -> list[Table]:
    """Rich tables; `plain` (no colour, e.g. for a text file) marks the best values with '*' instead."""
    out = []
    for table in report.tables:
        best = "Best per block marked *." if plain else "Best per block in green."
        under = [f"Under each value: the {report.compare} number (ours - {report.compare})."] if report.compare else []
        rich = Table(title=table.title, caption=" ".join([best, *under, *table.notes]))
        rich.add_column("model")
        rich.add_column("n", justify="right")
        for column in table.columns:
            rich.add_column(column.header, justify="right")
        previous = None
        for index, row in enumerate(table.rows):
            if previous is not None and row.block != previous:
                rich.add_section()
            previous = row.block
            texts = []
            for column in table.columns:
                text = cell_text(table, index, column)
                if text is None:
                    texts.append("-")
                    continue
                if (index, column.key) in table.best:
                    text = f"{text}*" if plain else f"[bold green]{text}[/bold green]"
                cell = row.cells[column.key]
                if report.compare and cell.reference is not None:
                    text += f"\n[dim]{cell.reference:.{column.digits}f} ({cell.difference:+.{column.digits}f})[/dim]"
                texts.append(text)
            rich.add_row(row.label, str(len(row.group.runs)), *texts)
        out.append(rich)
    for sweep in report.sweeps:
        out.append(rich_sweep(sweep))
    return out


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
        out.append("-" if cell is None else cell.text(column.digits))
    return out


def sweep_headers(sweep: SweepTable) -> list[str]:
    primary = sweep.table.primary
    return ["model", sweep.symbol, primary.header if primary else "source", MEAN, "n"]


def rich_sweep(sweep: SweepTable) -> Table:
    rich = Table(title=sweep.title)
    for index, header in enumerate(sweep_headers(sweep)):
        rich.add_column(header, justify="left" if index == 0 else "right")
    for label, x, row in sweep_rows(sweep):
        rich.add_row(label, x, *sweep_cells(sweep, row), str(len(row.group.runs)))
    return rich


def md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(md_escape(c) for c in cells) + " |"


def markdown_table(table: AccuracyTable, compare: str | None) -> list[str]:
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
                cells.append("-" if ref is None else f"{cell.difference:+.{column.digits}f}")
        lines.append(md_row(cells))
    return lines


def markdown(report: Report, paths: list[Path], figures: list[tuple[str, Path]] | None, plots_note: str | None,
             base: Path) -> str:
    """The whole report as one markdown document (figure links relative to `base`)."""
    lines = ["# Linear-probe report", "",
             f"{len(report.runs)} runs from {', '.join(f'`{p}`' for p in paths)}. Table metric: "
             f"`{report.metric}` ({METRICS[report.metric]}).", "", "## Protocol", ""]
    lines += [f"- **{what}**: {value}" for what, value in protocol_lines(report)]
    for table in report.tables:
        lines += ["", f"## {table.title}", "", *markdown_table(table, report.compare), ""]
        transfer = [c.header for c in table.columns if c.role == "transfer" and c.task == "classification"]
        notes = ["Best value per block (rows of one base method) in **bold**; mean ± std over training seeds "
                 "where n > 1."]
        if transfer:
            notes.append(f"{MEAN}: mean over {', '.join(transfer)}.")
        if any(c.task == "regression" for c in table.columns):
            notes.append("Regression columns show R² of the ridge probe.")
        if any(r.flagged for r in table.rows) or any(c.flagged for r in table.rows for c in r.cells.values()):
            notes.append(f"{DAGGER}: trained or probed with a different protocol from the rest of the table "
                         "(see Warnings).")
        if report.compare:
            notes.append(f"`{report.compare}`: reference number; Δ = ours - reference.")
        lines += [" ".join(notes + table.notes)]
    for sweep in report.sweeps:
        lines += ["", f"## {sweep.title}", "", md_row(sweep_headers(sweep)),
                  "|---|" + "---:|" * (len(sweep_headers(sweep)) - 1)]
        lines += [md_row([label, x, *sweep_cells(sweep, row), str(len(row.group.runs))])
                  for label, x, row in sweep_rows(sweep)]
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


def relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    fields = list(RECORD_FIELDS) + [k for k in ("reference", "difference") if rows and k in rows[0]]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "layers": ",".join(map(str, row.get("layers") or [])),
                         **{k: "" if row.get(k) is None else row[k] for k in ("lambda", "reference", "difference")
                            if k in row}})
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------- plots


LOSS_SKIP = ("epoch", "lr", "images_per_s", "seconds", "train_acc")


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def figure_colours(n: int) -> list[Any]:
    """Distinct colours for n bars: matplotlib's 10-colour cycle, tab20 beyond that."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if n <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(n)]


def write_plots(report: Report, directory: Path) -> list[tuple[str, Path]] | None:
    """PNG figures (title, path); None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, Path]] = []

    def save(figure: Any, name: str, title: str) -> None:
        FigureCanvasAgg(figure)
        path = directory / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        written.append((title, path))

    used: Counter[str] = Counter()
    common = os.path.commonpath([str(r.path.resolve().parent) for r in report.runs])
    for run in report.runs:
        short = Path(os.path.relpath(run.path.resolve(), common)).as_posix()
        terms = [k for k in dict.fromkeys(k for m in run.metrics for k in m) if k not in LOSS_SKIP
                 and all(isinstance(m.get(k, 0.0), (int, float)) for m in run.metrics)]
        if not run.metrics or not terms:
            continue
        figure = Figure(figsize=(6, 4))
        axes = figure.add_subplot()
        for term in terms:
            points = [(m["epoch"], m[term]) for m in run.metrics if term in m and "epoch" in m]
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None,
                      label=term)
        axes.set(xlabel="epoch", ylabel="loss", title=f"{short}: {run.model}")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend()
        base = safe_name(short)
        used[base] += 1
        save(figure, f"loss-{base}" + (f"-{used[base]}" if used[base] > 1 else ""), short)
    for table in report.tables:
        columns = [c for c in table.columns if c.task != "regression"]
        if not columns:
            continue
        figure = Figure(figsize=(max(6.0, 1.2 * len(columns) + 2), 4.5))
        axes = figure.add_subplot()
        width = 0.8 / max(len(table.rows), 1)
        colours = figure_colours(len(table.rows))
        for index, row in enumerate(table.rows):
            xs = [i + (index - (len(table.rows) - 1) / 2) * width for i, c in enumerate(columns) if c.key in row.cells]
            cells = [row.cells[c.key] for c in columns if c.key in row.cells]
            axes.bar(xs, [c.mean for c in cells], width, yerr=[c.std for c in cells], label=row.label, capsize=2,
                     color=colours[index])
        axes.set_xticks(range(len(columns)), [c.header for c in columns], rotation=30, ha="right")
        axes.set(ylabel=f"accuracy (%), {report.metric}", title=f"Accuracy per model: {table.title}")
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        save(figure, f"accuracy-{safe_name(table.source)}", f"Accuracy per model: {table.title}")
    for sweep in report.sweeps:
        figure = Figure(figsize=(10, 4))
        targets = [sweep.table.primary, sweep.table.column(MEAN)]
        for position, column in enumerate([c for c in targets if c is not None], start=1):
            axes = figure.add_subplot(1, 2, position)
            for series in sweep.series:
                points = [p for p in series.points if column.key in p.row.cells]
                axes.errorbar([p.x for p in points], [p.row.cells[column.key].mean for p in points],
                              yerr=[p.row.cells[column.key].std for p in points], marker="o", capsize=3,
                              label=series.label)
            for style, row in zip(("--", ":", "-.") * len(sweep.baselines), sweep.baselines):
                if column.key in row.cells:
                    axes.axhline(row.cells[column.key].mean, linestyle=style, color="grey",
                                 label=f"baseline: {row.group.label}")
            if sweep.axis == LAMBDA:
                xs = [p.x for s in sweep.series for p in s.points]
                positive = [x for x in xs if x > 0]
                if min(xs) > 0:
                    axes.set_xscale("log")
                elif positive:
                    axes.set_xscale("symlog", linthresh=min(positive))
            axes.set(xlabel=sweep.symbol, ylabel=f"{column.header} ({report.metric})", title=column.header)
            axes.legend(fontsize="small")
        figure.suptitle(sweep.title)
        axis = "lambda" if sweep.axis == LAMBDA else "epochs"
        save(figure, f"{axis}-{safe_name(sweep.table.source)}", sweep.title)
    return written


# --------------------------------------------------------------------------------------------- entry point


def run_report(paths: list[Path], fmt: str = "table", out: Path | None = None, plots: Path | None = None,
               compare: str | None = None, metric: str = "acc_best_test", console: Console | None = None,
               err_console: Console | None = None) -> Report:
    """`mim report`: tables (rich | markdown | json | csv) to `out` or the console, PNGs to `plots`.

    Warnings and notes go to `err_console` (stderr by default), so JSON / CSV / markdown on stdout
    stay clean for redirection.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if compare is not None and compare not in COMPARE:
        raise UsageError(f"--compare {compare!r}: choose one of {', '.join(COMPARE)}")
    paths = [Path(p) for p in paths] or [Path("runs")]
    console = console or Console()
    err = err_console or Console(stderr=True)
    warnings: list[str] = []
    try:
        report = build_report(paths, metric, compare, warnings)
    finally:
        for warning in warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)
    figures = write_plots(report, plots) if plots is not None else None
    note = PLOTS_HINT if plots is not None and figures is None else None
    if note:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    elif figures is not None:
        err.print(f"wrote {len(figures)} plots to {plots}", markup=False, highlight=False, soft_wrap=True)
    if fmt == "table":
        renderables: list[Any] = rich_tables(report, plain=out is not None)
        protocol = Table(title="protocol", show_header=False)
        for what, value in protocol_lines(report):
            protocol.add_row(what, value)
        renderables.append(protocol)
        if out is None:
            for renderable in renderables:
                console.print(renderable)
            return report
        recorder = Console(file=io.StringIO(), record=True, width=200, color_system=None)
        for renderable in renderables:
            recorder.print(renderable)
        text = recorder.export_text()
    elif fmt == "markdown":
        text = markdown(report, paths, figures, note, Path(out).parent if out is not None else Path.cwd())
    else:
        rows = records(report.runs, metric, report.reference)
        text = to_json(rows) if fmt == "json" else to_csv(rows)
    if out is None:
        console.out(text, end="", highlight=False)
    else:
        runs.atomic_write_text(Path(out), text)
        err.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)
    return report
