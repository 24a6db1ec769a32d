"""Collecting runs: find run directories, load the finished and probed ones, and their tidy records."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimcli.config import RunConfig, anchor_plugins, build_config
from mimcli.errors import UsageError
from mimcli.report.reference import reference_value
from mimcli.report.run_records import is_record, read_record, run_name
from mimcli.rundir import runs
from mimcli.rundir.labels import describe_model

# --------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One finished run directory with its probe results."""

    path: Path
    name: str
    config: RunConfig
    records: list[dict[str, Any]]  # probe records with status "ok"
    metrics: list[dict[str, Any]]
    label: str | None = None  # run.json's label: the row label when the run's plugin is not imported here
    foreign: dict[str, Any] | None = None  # model.json's description of a model mim did not train

    @property
    def model(self) -> str:
        if self.foreign is not None:
            return str(self.foreign.get("label", "?"))
        return describe_model(self.config, self.label)

    @property
    def lam(self) -> float | None:
        return self.config.regularizer.lam if "lambda" in self.config.regularizer.uses else None


def display_name(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Every folder holding config.toml at or below the paths (a run's own subfolders are not searched),
    and every run record (`*.record.json`) outside run folders, which stands for its run.
    Symlinked folders are followed (a run linked into a results folder is reported), each real folder once,
    so a link to a folder above it cannot loop."""
    found: dict[Path, Path] = {}
    seen: set[str] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise UsageError(f"{path}: no such file or directory")
        if path.is_file() and is_record(path):
            found.setdefault(path.resolve(), path)
            continue
        if path.is_file():
            if path.name != runs.CONFIG:
                raise UsageError(f"{path} is a file: pass run directories, run records or folders holding them")
            path = path.parent
        for folder, subfolders, files in os.walk(path, followlinks=True):
            real = os.path.realpath(folder)
            if real in seen:
                subfolders[:] = []
                continue
            seen.add(real)
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            if runs.CONFIG in files:
                found.setdefault(Path(folder).resolve(), Path(folder))
                subfolders[:] = []
                continue
            for name in sorted(f for f in files if is_record(Path(f))):
                found.setdefault((Path(folder) / name).resolve(), Path(folder) / name)
    return list(found.values())


def load_run(path: Path, warnings: list[str]) -> Run | None:
    """The run, or None with a warning naming it when it is malformed, unfinished or not probed."""
    if is_record(path) and path.is_file():
        return load_record(path, warnings)
    name = display_name(path)

    def skip(reason: str) -> None:
        warnings.append(f"skipped {name}: {reason}")

    try:
        config = runs.load_run_config(path)
    except UsageError as error:
        skip(f"unreadable {runs.CONFIG} ({error})")
        return None
    foreign = None
    try:
        status = runs.read_json(path / runs.STATUS)
    except FileNotFoundError:
        try:  # a model mim did not train: nothing to finish, model.json says what it is
            foreign = runs.read_json(path / runs.FOREIGN)["model"]
            status = {"status": "finished"}
        except FileNotFoundError:
            skip(f"no {runs.STATUS} (not written by `mim pretrain`)")
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            skip(f"unreadable {runs.FOREIGN} ({error})")
            return None
    except (OSError, ValueError) as error:
        skip(f"unreadable {runs.STATUS} ({error})")
        return None
    if not isinstance(status, dict) or status.get("status") != "finished":
        state = status.get("status", "?") if isinstance(status, dict) else "?"
        done = status.get("epochs_done", "?") if isinstance(status, dict) else "?"
        skip(f"unfinished ({state}, {done} of {config.train.epochs} epochs)")
        return None
    probe_path = path / runs.PROBE
    if not probe_path.is_file():
        skip(f"no probe results (run `mim probe {name}`)")
        return None
    try:
        probe = runs.read_json(probe_path)
        results = probe["results"]
        if not isinstance(results, list):
            raise TypeError("results is not a list")
    except (OSError, ValueError, KeyError, TypeError) as error:
        skip(f"unreadable {runs.PROBE} ({error})")
        return None
    if foreign is None and stale(path, probe):  # a foreign probe hashes its weights with how it reads them
        skip(f"{runs.PROBE} is stale: the backbone changed after probing (run `mim probe {name}` again)")
        return None
    return probed_run(path, name, config, status, results, runs.read_metrics(path), foreign, warnings)


def probed_run(
    path: Path,
    name: str,
    config: RunConfig,
    status: dict[str, Any],
    results: list[Any],
    metrics: list[dict[str, Any]],
    foreign: dict[str, Any] | None,
    warnings: list[str],
) -> Run | None:
    """The Run of a finished run's parts (from its folder or its record): its probe results with status ok."""
    records = [
        r
        for r in results
        if isinstance(r, dict)
        and r.get("status") == "ok"
        and isinstance(r.get("dataset"), str)
        and isinstance(r.get("metrics"), dict)
        and r["metrics"]
    ]
    failed = [f"{r.get('dataset', '?')} ({r.get('status', '?')})" for r in results if r not in records]
    if failed:
        warnings.append(f"{name}: no probe result for {', '.join(failed)}")
    if not records:
        warnings.append(f"skipped {name}: no probe results with status ok")
        return None
    label = status.get("label")
    return Run(path, name, config, records, metrics, label if isinstance(label, str) else None, foreign)


def load_record(path: Path, warnings: list[str]) -> Run | None:
    """The run a record stands for (run_records), or None with a warning when the file is not one."""
    name = display_name(path.with_name(run_name(path)))
    try:
        data = read_record(path)
        config = build_config(anchor_plugins(data["config"], path.parent), str(path), stored=True)
    except (ValueError, UsageError) as error:
        warnings.append(f"skipped {display_name(path)}: unreadable run record ({runs.first_line(error)})")
        return None
    foreign = data.get("foreign") if isinstance(data.get("foreign"), dict) else None
    return probed_run(path, name, config, data["run"], data["results"], data["metrics"], foreign, warnings)


def stale(path: Path, probe: dict[str, Any]) -> bool:
    """The probed checkpoint file changed since probe.json was written (hashes only when it is newer)."""
    checkpoint = probe.get("checkpoint") or {}
    weights = path / str(checkpoint.get("path") or runs.BACKBONE)
    if not weights.is_file() or not checkpoint.get("sha256"):
        return False
    if weights.stat().st_mtime <= (path / runs.PROBE).stat().st_mtime:
        return False
    return bool(runs.file_sha256(weights) != checkpoint["sha256"])


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
    return {"linear": metric, "knn": "acc", "regression": "r2"}.get(str(record.get("protocol")), metric)


def record_value(record: dict[str, Any], metric: str) -> float | None:
    summary = (record.get("metrics") or {}).get(metric_key(record, metric))
    if not isinstance(summary, dict) or not isinstance(summary.get("mean"), (int, float)):
        return None
    return float(summary["mean"])


def preferred_record(records: list[dict[str, Any]], metric: str, features: str | None = None) -> dict[str, Any] | None:
    """Of several records for one data set, the table shows the run's own probe.features (`features`; a
    `mim probe --features` of the other kind sits beside it), then linear (or regression) on layer 4."""

    def rank(r: dict[str, Any]) -> tuple[bool, bool, bool]:
        other = features is not None and (r.get("params") or {}).get("features", "raw") != features
        return other, r.get("protocol") == "knn", r.get("layers") != [4]

    return min((r for r in records if record_value(r, metric) is not None), key=rank, default=None)


def probe_signature(record: dict[str, Any]) -> dict[str, Any]:
    """What must match for two probe numbers to be comparable (the probe seeds need not)."""
    # the seeds need not match, and how a foreign model sees its images belongs to the model, not the probe
    params = {k: v for k, v in (record.get("params") or {}).items() if k not in ("seeds", "preprocessing")}
    return {"protocol": record.get("protocol"), "layers": record.get("layers"), **params}


def run_fields(run: Run) -> dict[str, Any]:
    """The columns that name a run in every tidy record (probe results and information estimates)."""
    cfg = run.config
    if run.foreign is not None:
        return {"run": run.name, "model": run.model, "method": f"foreign:{run.foreign.get('kind')}"} | dict.fromkeys(
            ("regularizer", "lambda", "epochs", "seed")
        )
    return {
        "run": run.name,
        "model": run.model,
        "method": cfg.method.name,
        "regularizer": cfg.regularizer.kind,
        "lambda": run.lam,
        "epochs": cfg.train.epochs,
        "seed": cfg.train.seed,
    }


def records(
    runs_: list[Run], metric: str = "acc_best_test", reference: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Tidy records, one per (run, probe record): the JSON / CSV output."""
    out = []
    for run in runs_:
        cfg = run.config
        for record in run.records:
            value = record_value(record, metric)
            if value is None:
                continue
            row = {
                **run_fields(run),
                "dataset": record["dataset"],
                "task": record.get("task"),
                "metric": metric_key(record, metric),
                "value": value,
                "protocol": record.get("protocol"),
                "layers": record.get("layers"),
                "features": (record.get("params") or {}).get("features", "raw"),
            }
            if reference is not None:
                ref = reference_value(reference, source_key(cfg), run.model, record["dataset"])
                row["reference"] = ref
                row["difference"] = None if ref is None else value - ref
            out.append(row)
    return out


def source_key(config: RunConfig) -> str:
    return f"imagefolder:{config.data.root}" if config.data.dataset == "imagefolder" else config.data.dataset
