"""The run directory: file names, atomic writes, and loading a trained backbone back for probes.

runs/<name>/
  config.toml     the resolved config (every key, defaults included)
  metrics.jsonl   one JSON line per epoch: every loss term, lr, images/s, seconds
  checkpoint.pt   model + heads + optimiser + EMA target + RNG states + epoch (for --resume)
  backbone.pt     backbone weights only (what probes load)
  backbones/epoch-N.pt  backbone weights kept at train.save_epochs
  run.json        status ("running" | "finished"), epochs done, wall time
  probe.json      probe results (written by `mim probe`)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mimcli.config import RunConfig, build_config, read_toml, to_toml
from mimcli.errors import UsageError

if TYPE_CHECKING:
    from mimcli.models.resnet import PooledResNet

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
BACKBONE = "backbone.pt"
STATUS = "run.json"
PROBE = "probe.json"


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
    return json.loads(path.read_text())


def save_config(run_dir: Path, config: RunConfig) -> None:
    atomic_write_text(run_dir / CONFIG, to_toml(config.to_dict()))


def load_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a run directory (no {CONFIG})")
    return build_config(read_toml(path), str(path))


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


def load_backbone(run_dir: Path, weights: str = BACKBONE,
                  map_location: str = "cpu") -> tuple[PooledResNet, RunConfig]:
    """The trained backbone of a run, in eval mode, plus its config. Loads tensors only (weights_only)."""
    from mimcli.models.resnet import build_backbone

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    path = run_dir / weights
    if not path.is_file():
        raise UsageError(f"{path} not found: has the run finished?")
    backbone = build_backbone(config.model.backbone, config.model.width, config.data.image_size, config.model.stem)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise UsageError(f"cannot load {path}: {str(error).splitlines()[0]}") from None
    backbone.load_state_dict(state)
    return backbone.eval(), config
