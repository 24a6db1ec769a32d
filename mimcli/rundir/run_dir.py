"""Claiming a run directory: refuse to clobber or mix runs, replace only a mim run (--force), check that
a resume trains the same recipe, and the files a run keeps up to date (metrics.jsonl, run.json fields).

What these promise and the tests that prove it: docs/reliability.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mimcli import distributed
from mimcli.config import RunConfig
from mimcli.errors import UsageError
from mimcli.rundir import provenance, runs


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """metrics.jsonl keeps one line per finished epoch; lines past a resumed epoch are dropped first."""
    import json

    kept = [r for r in runs.read_metrics(run_dir) if r.get("epoch", 0) < record["epoch"]]
    text = "".join(json.dumps(r) + "\n" for r in [*kept, record])
    runs.atomic_write_text(run_dir / runs.METRICS, text)


def check_run_dir(run_dir: Path, config: RunConfig, resume: bool, force: bool) -> bool:
    """Refuse to clobber or mix runs; True when --force will replace an existing run.

    Every rank checks (so all raise the same error and none waits for one that failed). Nothing is
    written or deleted here: the caller replaces the run only once data and model have been built.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"{run_dir} is a file, not a run directory: choose another --out")
    exists = run_dir.is_dir() and any(run_dir.iterdir())
    if exists and not (resume or force):
        raise UsageError(f"{run_dir} already holds files: pass --resume to continue a run or --force to replace one")
    if resume:
        check_resume(run_dir, config)
        return False
    if not (force and exists):
        return False
    if not runs.is_run(run_dir):
        raise UsageError(f"--force replaces only a mim run (config.toml and run.json), and {run_dir} is not one")
    foreign = runs.foreign_entries(run_dir)
    if foreign:
        raise UsageError(
            f"--force: {run_dir} also holds files mim did not write ({', '.join(foreign[:5])}); "
            "move them or choose another --out"
        )
    return True


def check_resume(run_dir: Path, config: RunConfig) -> None:
    """The record is the truth: refuse a resume that would make config.toml, run.json or metrics.jsonl
    disagree with the weights. config.toml must still be the recipe checkpoint.pt recorded (no hand edit),
    the planned config may change only the safe keys, and not so that it names epochs the weights passed."""
    path = run_dir / runs.CHECKPOINT
    if not path.is_file():
        raise UsageError(f"nothing to resume: {path} not found")
    allowed: tuple[str, ...] = runs.RESUME_SAFE_KEYS
    if config.train.schedule != "constant":  # the learning rate of every epoch depends on train.epochs
        allowed = tuple(key for key in allowed if key != "train.epochs")
    record = runs.checkpoint_record(path)
    stored = runs.load_run_config(run_dir)
    edits = runs.recipe_edits(record["config"], stored, allowed) if isinstance(record["config"], dict) else []
    if edits:
        raise UsageError(
            f"{run_dir / runs.CONFIG} was changed after {runs.CHECKPOINT} was written ({'; '.join(edits)}); "
            "the weights were trained with the checkpoint's values: put them back, or train a new run"
        )
    diff = runs.config_diff(stored, runs.as_recorded(config, run_dir), allowed)  # adjusted values as used
    if diff:
        raise UsageError(
            f"--resume must train the recipe that produced the weights; it differs in "
            f"{'; '.join(diff)} (only {', '.join(allowed)}* may change)"
        )
    done, step = record["epoch"], record["step"]
    held = f"{done} epoch{'' if done == 1 else 's'}" + (f" and {step} steps of epoch {done + 1}" if step else "")
    if config.train.epochs < done + (1 if step else 0):
        raise UsageError(
            f"--resume with train.epochs={config.train.epochs}, but {runs.CHECKPOINT} already holds {held}: "
            f"{runs.CONFIG} and {runs.STATUS} would disagree with the weights (train a new run for fewer epochs)"
        )
    passed = sorted(e for e in set(config.train.save_epochs) - set(stored.train.save_epochs) if e <= done)
    if passed:
        raise UsageError(
            f"--resume adds train.save_epochs {', '.join(map(str, passed))}, but {runs.CHECKPOINT} already holds "
            f"{held}: those backbones were not kept, and {runs.CONFIG} would say they were"
        )


def prepare_run_dir(run_dir: Path, replace: bool) -> None:
    """Rank 0 deletes the old run (when --force replaces one) and creates the folder, just before writing."""
    if distributed.is_main():
        if replace:
            import shutil

            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier()


def run_provenance(run_dir: Path, device: torch.device, resume: bool) -> dict[str, Any]:
    """run.json's reproducibility fields; a resumed run keeps its first start time and adds this one."""
    info = {**provenance.describe(device), "started_at": provenance.now()}
    if resume and (run_dir / runs.STATUS).is_file():
        try:
            before = runs.read_json(run_dir / runs.STATUS)
        except ValueError:
            before = {}
        if isinstance(before, dict) and before.get("started_at"):
            info["resumed_at"] = [*before.get("resumed_at", []), info["started_at"]]
            info["started_at"] = before["started_at"]
        if isinstance(before, dict) and before.get("adjusted"):  # what the first session changed still holds
            info["adjusted"] = before["adjusted"]
    return info
