"""Where a planned point stands (finished, resumable, unprobed, locked) and what running it did."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mimcli.config import RunConfig
from mimcli.errors import UsageError
from mimcli.rundir import runs
from mimcli.sweep.plan import SweepPoint

OutcomeStatus = Literal["ran", "skipped-finished", "skipped-locked", "dry-run"]


@dataclass
class PointOutcome:
    point: SweepPoint
    status: OutcomeStatus
    trained: bool = False  # this process trained (or resumed) the point's run, or its epochs-sweep source
    resumed: bool = False
    probed: bool = False
    message: str = ""
    commands: list[str] = field(default_factory=list)  # dry run: what would run now


def run_status(run_dir: Path) -> dict[str, Any]:
    try:
        status = runs.read_json(run_dir / runs.STATUS)
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def _dataset_key(name: str) -> str:
    kind, sep, arg = name.partition(":")
    return kind.lower() + sep + arg


def missing_probes(run_dir: Path, config: RunConfig) -> list[str]:
    """The [probe] data sets that probe.json lacks for the current backbone.pt (all of them if it is stale);
    a data set recorded as 'missing' (not on disk last time) counts as lacking, so a rerun retries it."""
    wanted = list(config.probe.datasets)
    if not wanted:
        return []
    try:
        data = runs.read_json(run_dir / runs.PROBE)
        done = {_dataset_key(record["dataset"]) for record in data["results"] if record.get("status") != "missing"}
        current = data["checkpoint"]["sha256"] == runs.file_sha256(run_dir / runs.BACKBONE)
    except (OSError, ValueError, KeyError, TypeError):
        return wanted
    return [name for name in wanted if not current or _dataset_key(name) not in done]


def point_state(point: SweepPoint) -> str:
    """new | interrupted (a checkpoint to resume) | trained (probes missing) | finished."""
    if run_status(point.run_dir).get("status") == "finished":
        return "trained" if missing_probes(point.run_dir, point.config) else "finished"
    if point.source is None and (point.run_dir / runs.CHECKPOINT).is_file():
        return "interrupted"
    return "new"


def check_conflicts(points: list[SweepPoint]) -> None:
    """Refuse to resume or skip a point whose directory holds a run of another config."""
    every = {q.run_dir: q for p in points for q in (p, p.source) if q is not None}
    for point in every.values():
        if (point.run_dir / runs.CONFIG).is_file():
            diff = runs.config_diff(runs.load_run_config(point.run_dir), runs.as_recorded(point.config, point.run_dir))
            if diff:
                raise UsageError(
                    f"{point.run_dir} holds a run of another config ({'; '.join(diff[:3])}): "
                    "choose another sweep --name or remove that directory"
                )
