"""`mim report --records DIR`: write one run record (run_records) per run the report read.

Each record lands at the run's place below the path it was found under (a sweep folder stays a
folder), so a figure drawn per folder of runs is drawn the same from the records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mimcli.errors import UsageError
from mimcli.report.collect import Run
from mimcli.report.run_records import SUFFIX, is_record, make_record, read_record, run_name
from mimcli.rundir import runs
from mimcli.rundir.labels import describe_model


def provenance(run: Run) -> dict[str, Any]:
    """run.json as the run wrote it, less its row label, which the report derives from the config (so a
    record takes the labels of the mim that reads it), unless the config alone cannot name the model."""
    if is_record(run.path):
        recorded = dict(read_record(run.path)["run"])
    else:
        try:
            recorded = runs.read_json(run.path / runs.STATUS) if run.foreign is None else {"status": "finished"}
        except (OSError, ValueError):
            recorded = {"status": "finished"}
    if run.foreign is None and run.label is not None and describe_model(run.config) != run.label:
        recorded["label"] = run.label
    else:
        recorded.pop("label", None)
    command = recorded.get("command")
    if isinstance(command, list) and command and isinstance(command[0], str):
        recorded["command"] = [Path(command[0]).name, *command[1:]]  # not the path of one machine's install
    return recorded


def record_of(run: Run) -> dict[str, Any]:
    return make_record(run.config.to_dict(), provenance(run), run.records, run.metrics, run.foreign)


def destination(run: Run, roots: list[Path], out: Path) -> Path:
    """out/<the run's path below the root it was found under>.record.json."""
    path = run.path.resolve()
    for root in (Path(r).resolve() for r in roots):
        if root.is_file() or path == root:
            return out / (run_name(path) + SUFFIX)
        if path.is_relative_to(root):
            relative = path.relative_to(root)
            return out / relative.parent / (run_name(relative) + SUFFIX)
    return out / (run_name(path) + SUFFIX)


def write_records(runs_: list[Run], roots: list[Path], out: Path) -> list[Path]:
    """One record per run under `out` (written atomically); two runs that would share a file are an error."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--records {out} is not a folder: give a folder for the run records")
    targets = [destination(run, roots, Path(out)) for run in runs_]
    clashes = sorted({str(t) for t in targets if targets.count(t) > 1})
    if clashes:
        raise UsageError(f"--records: two runs would write {clashes[0]}: pass the folders one at a time")
    for run, target in zip(runs_, targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        runs.write_json(target, record_of(run))
    return targets
