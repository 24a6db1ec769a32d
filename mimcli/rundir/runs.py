"""The run directory: file names, atomic writes, and loading a trained backbone back for probes.

runs/<name>/
  config.toml     the resolved config (every key, defaults included)
  metrics.jsonl   one JSON line per epoch: every loss term, lr, images/s, seconds
  checkpoint.pt   model + heads + optimiser + EMA target + RNG states + epoch (for --resume)
  backbone.pt     backbone weights only (what probes load)
  backbones/epoch-N.pt  backbone weights kept at train.save_epochs
  run.json        status ("running" | "finished"), epochs done, wall time
  requirements.txt  every installed distribution at the run's first start, pinned (pip install -r)
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

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mimcli.config import RunConfig, anchor_plugins, build_config, read_toml, to_toml
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
REQUIREMENTS = "requirements.txt"
INFO_KEY = "info"  # metrics.jsonl records carry the information-plane estimates under this key
RUN_ENTRIES = frozenset({CONFIG, METRICS, CHECKPOINT, BACKBONE, STATUS, PROBE, FEATURES, SAVED_BACKBONES, REQUIREMENTS})
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
    # decode images: none of them changes a weight (tests/train/test_information.py, test_stream.py)
    "run.reproduces",
    "train.log",
    "train.print_every",
    "train.diagnostics_every",
    "train.diagnostics_images",
    "train.grad_norm_steps",
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


SPACE_MARGIN = 1 << 20  # headers, HDF5 metadata, torch's zip records: a file is a little larger than its data


def check_free_space(path: Path, needed: int) -> None:
    """Refuse before writing `needed` bytes at `path` on a disk that lacks them (OSError ENOSPC naming the
    file): a write that fails part-way is caught too, but HDF5 crashes the process when it cannot close a
    file on a full disk (github.com/h5py/h5py/issues/914), so feature caches and packs must not start such a write."""
    folder = next((p for p in (path.parent, *path.parent.parents) if p.is_dir()), Path("."))
    free = shutil.disk_usage(folder).free
    if free < needed + SPACE_MARGIN:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device: writing it needs about {_mib(needed + SPACE_MARGIN)}, {_mib(free)} free",
            str(path),
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor in a (nested) state dict: about what torch.save writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(value) for value in obj)
    return 0


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, renamed when complete. A disk without room is refused before
    writing; a write that fails (torch raises RuntimeError) is an OSError naming the file. Either way
    the previous file is untouched and the temporary one removed."""
    check_free_space(path, tensor_bytes(obj))
    fd, tmp = temporary_beside(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except RuntimeError as error:  # torch's zip writer: "file write failed", "unexpected pos" on a full disk
        Path(tmp).unlink(missing_ok=True)
        raise OSError(errno.EIO, f"cannot write it ({first_line(error)}): is the disk full?", str(path)) from None
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


def with_values(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """A copy of `config` with `section.key` values replaced (validated like any config)."""
    raw = config.to_dict()
    for key, value in values.items():
        section, name = key.split(".")
        raw[section][name] = value
    return build_config(raw, "adjusted values", stored=True)


def as_recorded(config: RunConfig, run_dir: Path) -> RunConfig:
    """`config` with each value the run in `run_dir` adjusted (run.json "adjusted": a batch larger than
    the data...) replaced by the value it used, when `config` asks for the same value again: the
    same command line then compares equal to the run's config.toml."""
    try:
        adjusted = read_json(Path(run_dir) / STATUS).get("adjusted") or {}
    except (OSError, ValueError, AttributeError):
        return config
    flat = dict(_flatten(config.to_dict()))
    values = {key: record["used"] for key, record in adjusted.items() if flat.get(key) == record.get("requested")}
    return with_values(config, values) if values else config


def save_config(run_dir: Path, config: RunConfig) -> None:
    atomic_write_text(run_dir / CONFIG, to_toml(config.to_dict()))


def load_run_config(run_dir: Path) -> RunConfig:
    """A run's config.toml as a record: validated, its plugins never imported (docs/extending.md)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a run directory (no {CONFIG})")
    return build_config(anchor_plugins(read_toml(path), path.parent), str(path), stored=True)


def checkpoint_record(path: Path) -> dict[str, Any]:
    """What a checkpoint says about its weights without reading them (memory-mapped): `epoch` (finished
    epochs), `step` (steps into the next one) and `config` (the recipe that trained them, as a dict)."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a file system without mmap: read it whole
            state = torch.load(path, map_location="cpu", weights_only=True)
        record = {"epoch": int(state["epoch"]), "step": int(state.get("step", 0)), "config": state.get("config")}
    except Exception as error:  # a checkpoint that is not ours, a torn or empty file
        raise UsageError(f"cannot resume from {path}: {first_line(error)}") from None
    return record


def recipe_edits(recorded: dict[str, Any], stored: RunConfig, allowed: tuple[str, ...]) -> list[str]:
    """Keys whose value in config.toml is not the one the checkpoint's recipe recorded (a hand edit), less
    the `allowed` prefixes; keys only one side has (a newer or older mim) are not compared."""
    a, b = dict(_flatten(recorded)), dict(_flatten(stored.to_dict()))
    return [
        f"{key} {b[key]!r} in {CONFIG}, {a[key]!r} in {CHECKPOINT}"
        for key in sorted(a.keys() & b.keys())
        if a[key] != b[key] and not key.startswith(allowed or ("\0",))
    ]


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
