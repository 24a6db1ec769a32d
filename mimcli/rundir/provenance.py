"""What run.json records so a run can be reproduced: versions, code commit, device, threads, command line, times.

The git commit is that of the mim source tree (the checkout holding this package), since that is the
code that trained the run; an installed wheel has none and records null. `git_dirty` says whether
that checkout had uncommitted changes to tracked files.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import mimcli

SOURCE = Path(mimcli.__file__).resolve().parent.parent


def now() -> str:
    """UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(SOURCE), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """Commit of the mim source checkout and whether it had uncommitted changes (None outside git)."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != SOURCE:  # a wheel inside someone else's repository is not ours
        return {"git_commit": None, "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status)}


def own_distribution() -> str | None:
    """The installed distribution that provides `mimcli` (None when it runs from a bare source tree)."""
    names = importlib.metadata.packages_distributions().get("mimcli", [])
    return names[0] if names else None


def requirements() -> str:
    """Every distribution installed beside mim, pinned to its exact version, as a pip requirements file.

    `pip install -r` of it rebuilds the environment a run came from. mim itself is left out (it is not
    on the package index under a pinned source; run.json's git_commit and mim_version say which code)."""
    own = own_distribution()
    pins = {
        dist.metadata["Name"].lower().replace("_", "-"): dist.version
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"] and dist.metadata["Name"] != own
    }
    header = (
        f"# The Python packages installed when this run started (mim {mimcli.__version__}, Python "
        f"{platform.python_version()}).\n# Rebuild that environment: pip install -r requirements.txt\n"
    )
    return header + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def describe(device: torch.device, argv: list[str] | None = None) -> dict[str, Any]:
    """The environment of this training process, for run.json."""
    return {
        "mim_version": mimcli.__version__,
        **git_state(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": device_name(device),
        # CPU results depend on it: reductions split over threads sum in another order (docs/sweeps.md)
        "threads": torch.get_num_threads(),
        "command": list(sys.argv if argv is None else argv),
    }
