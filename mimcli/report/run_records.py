"""Run records: one small JSON file per run holding what `mim report` reads from a run directory.

A record keeps the resolved config, the run's provenance (run.json, less its row label), the probe
results and the per-epoch history (metrics.jsonl), never weights or features, so a study's numbers can be
committed beside the documents that quote them and a report rebuilt from them without the runs
(docs/report.md, "Records"). `mim report` reads a `*.record.json` file as it reads a run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUFFIX = ".record.json"
FORMAT = 1
KIND = "mim run record"  # the `kind` key: a JSON file that is not a record is never read as one


def is_record(path: Path) -> bool:
    return path.name.endswith(SUFFIX)


def run_name(path: Path) -> str:
    """The run a record stands for: its file name less the suffix (`kind-rc.record.json` -> `kind-rc`)."""
    return path.name[: -len(SUFFIX)] if is_record(path) else path.name


def make_record(
    config: dict[str, Any],
    provenance: dict[str, Any],
    results: list[dict[str, Any]],
    metrics: list[dict[str, Any]],
    foreign: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record's JSON object; `provenance` is run.json as the run wrote it (version, commit, command)."""
    record: dict[str, Any] = {
        "kind": KIND,
        "format": FORMAT,
        "config": config,
        "run": provenance,
        "results": results,
        "metrics": metrics,
    }
    if foreign is not None:
        record["foreign"] = foreign
    return record


def read_record(path: Path) -> dict[str, Any]:
    """The record in `path`; ValueError naming what is wrong when it is not one this version reads."""
    try:
        data = json.loads(Path(path).read_bytes().decode())
    except OSError as error:
        raise ValueError(str(error)) from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ValueError(f"not a {KIND}")
    if data.get("format") != FORMAT:
        raise ValueError(f"record format {data.get('format')!r}; this mim reads format {FORMAT}")
    for key, kind in (("config", dict), ("run", dict), ("results", list), ("metrics", list)):
        if not isinstance(data.get(key), kind):
            raise ValueError(f"{key!r} is missing or not a {kind.__name__}")
    return data
