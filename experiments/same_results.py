"""Does a change alter any result? Train every method x regulariser pair for one tiny epoch through the CLI
and print a digest of the trained weights and the logged loss, one line per pair.

    git worktree add /tmp/before <commit>                                  # the code before the change
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/before python experiments/same_results.py > before.txt
    OMP_NUM_THREADS=1 python experiments/same_results.py > after.txt
    diff before.txt after.txt                                              # empty: bit-identical results

fp32 and one thread, so the digests depend only on the code (and torch), not on the load or thread count.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

TINY = [
    "model.width=8",
    "data.dataset=shapes",
    "data.shapes.n_train=64",
    "data.shapes.n_test=32",
    "train.batch_size=16",
    "train.epochs=1",
    "train.precision=fp32",
    "train.threads=1",
    "train.diagnostics_every=0",
    "probe.datasets=[]",
]
METHODS = ("simclr", "byol", "barlow", "supervised")
REGULARIZERS = ("none", "rc", "lbe", "mib", "ip", "noise")


def digest(run: Path) -> str:
    """sha256 over every tensor of every .pt file of a run, by name."""
    sha = hashlib.sha256()
    for path in sorted(run.glob("*.pt")):
        state = torch.load(path, map_location="cpu", weights_only=False)
        state = state.get("model", state) if isinstance(state, dict) else state
        for key in sorted(k for k in state if isinstance(state[k], torch.Tensor)):
            sha.update(key.encode())
            sha.update(state[key].numpy().tobytes())
    return sha.hexdigest()[:16]


def main() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for method in METHODS:
        for kind in REGULARIZERS:
            if method == "supervised" and kind in ("mib", "ip"):  # they compare two views; supervised has one
                continue
            with tempfile.TemporaryDirectory() as folder:
                run = Path(folder, "run")
                sets = [
                    x for o in [*TINY, f"method.name={method!r}", f"regularizer.kind={kind!r}"] for x in ("--set", o)
                ]
                command = "supervised" if method == "supervised" else "pretrain"
                done = subprocess.run(
                    [sys.executable, "-m", "mimcli", command, *sets, "--out", str(run), "--no-progress"],
                    capture_output=True,
                    text=True,
                    check=False,
                    env=env,
                    cwd=folder,  # `-m` puts the working directory first on sys.path: PYTHONPATH must decide
                )
                if done.returncode:
                    print(method, kind, "failed:", done.stderr.strip().splitlines()[-1:], flush=True)
                    continue
                losses = [
                    round(json.loads(line)["loss"], 10) for line in (run / "metrics.jsonl").read_text().splitlines()
                ]
                print(method, kind, digest(run), losses, flush=True)


if __name__ == "__main__":
    main()
