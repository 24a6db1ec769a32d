"""The run directory: file names, atomic writes, and loading a trained backbone back for probes.

runs/<name>/
  config.toml     the resolved config (every key, defaults included)
  metrics.jsonl   one JSON line per epoch: every loss term, lr, images/s, seconds
  checkpoint.pt   model + heads + optimiser + EMA target + RNG states + epoch (for --resume)
  backbone.pt     backbone weights only (what probes load)
  backbones/epoch-N.pt  backbone weights kept at train.save_epochs
  run.json        status ("running" | "finished"), epochs done, wall time
  probe.json      probe results (written by `mim probe`)
  features/       cached probe features (HDF5, written by `mim probe`)

A model mim did not train, probed with `mim probe torchvision:NAME` or a checkpoint file, gets a
run-like directory: model.json (what the model is) in place of run.json, backbone.pt, config.toml
(the probe data's settings), probe.json, features/ (mimcli.probe.foreign).

A directory is a mim run when it holds config.toml and a run.json whose status is "running" or
"finished" (`is_run`). `--force` replaces only such a directory, and only when everything in it is a
name from the list above (or one of our temporary files): mim never deletes a file it did not write.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mimcli.config import RunConfig, build_config, read_toml, to_toml
from mimcli.errors import UsageError

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
BACKBONE = "backbone.pt"
STATUS = "run.json"
PROBE = "probe.json"
FOREIGN = "model.json"  # a probe directory of a model mim did not train (mimcli.probe.foreign)
FEATURES = "features"
SAVED_BACKBONES = "backbones"
RUN_ENTRIES = frozenset({CONFIG, METRICS, CHECKPOINT, BACKBONE, STATUS, PROBE, FEATURES, SAVED_BACKBONES})
TEMPORARY = re.compile(r"^\..+\.tmp$")  # what temporary_beside names, left by a crash
# Keys --resume may change: how long to train, where and how fast, what is logged and probed. None of
# them changes what the finished epochs computed, so config.toml still describes the weights.
RESUME_SAFE_KEYS = (
    "train.epochs",
    "train.device",
    "train.threads",
    "train.log_every",
    "train.save_epochs",
    "train.compile",
    "run.description",
    "run.out",
    "probe.",
    # where and how often progress, trackers and diagnostics are written, and how many processes
    # decode images: none of them changes a weight (tests/test_information.py, test_stream.py)
    "run.reproduces",
    "train.log",
    "train.print_every",
    "train.diagnostics_every",
    "train.diagnostics_images",
    "train.checkpoint_steps",
    "data.workers",
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_beside(path: Path) -> tuple[int, str]:
    """A temporary file next to `path` with the permissions a plain open() would give (mkstemp uses 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    fd, tmp = temporary_beside(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> Any:
    """Parsed JSON; undecodable bytes raise ValueError like malformed JSON does (UnicodeDecodeError is one)."""
    return json.loads(path.read_bytes().decode())


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type when the message is empty (a zero-byte file)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def is_run(path: Path) -> bool:
    """True when `path` holds config.toml and a run.json with status "running" or "finished"."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        return False
    try:
        status = read_json(path / STATUS)
    except (OSError, ValueError):
        return False
    return isinstance(status, dict) and status.get("status") in ("running", "finished")


def foreign_entries(path: Path) -> list[str]:
    """Names in a run directory that mim did not write (so --force must not delete them)."""
    return sorted(p.name for p in Path(path).iterdir() if p.name not in RUN_ENTRIES and not TEMPORARY.match(p.name))


def _flatten(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, dict) and key != "block_weights":
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def config_diff(stored: RunConfig, planned: RunConfig, allowed: tuple[str, ...] = ()) -> list[str]:
    """'key old there, new planned' for every key that differs, less those starting with an `allowed` prefix."""
    a, b = dict(_flatten(stored.to_dict())), dict(_flatten(planned.to_dict()))
    return [
        f"{key} {a.get(key)!r} there, {b.get(key)!r} planned"
        for key in sorted(a.keys() | b.keys())
        if a.get(key) != b.get(key) and not key.startswith(allowed or ("\0",))
    ]


def save_config(run_dir: Path, config: RunConfig) -> None:
    atomic_write_text(run_dir / CONFIG, to_toml(config.to_dict()))


def load_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a run directory (no {CONFIG})")
    return build_config(read_toml(path), str(path), stored=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete line of metrics.jsonl (a torn last line from a crash is ignored)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
