"""The shape of probe.json: what `run_probes` writes and `mim report` reads (docs/probing.md).

TypedDicts rather than dataclasses because they are the JSON itself: written with json.dump and
read back by the report and by sweeps without a conversion step.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

ProbeStatus = Literal["ok", "missing"]
Protocol = Literal["linear", "knn", "regression"]


class Summary(TypedDict):
    """One metric over the probe seeds: mean, sample std (0 for one seed) and the values."""

    mean: float
    std: float
    values: list[float]


class ProbeRecord(TypedDict):
    """One (data set, protocol, layers) probe: its metrics, or status 'missing' and a message."""

    dataset: str
    task: str
    protocol: str
    layers: list[int]
    status: ProbeStatus
    message: str | None
    metrics: dict[str, Summary]
    params: dict[str, Any]
    cache_key: str | None
    n_train: int | None
    n_test: int | None
    seconds: float | None


class Checkpoint(TypedDict):
    path: str
    sha256: str


class ProbeResult(TypedDict):
    """probe.json: the checkpoint probed and one record per (data set, protocol, layers)."""

    format: int
    run: str
    checkpoint: Checkpoint
    results: list[ProbeRecord]
