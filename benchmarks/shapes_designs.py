"""Screen main-job designs on `shapes`: SimCLR and a random-init network, shape / hue / position, steps and time.

    python benchmarks/shapes_designs.py DESIGN [DESIGN ...]   # names from DESIGNS below; --list to see them

Each design is the quickstart preset plus overrides. For each it pretrains SimCLR, probes it, and
probes the same architecture at train.epochs=0 (random init, cached per architecture), then prints
steps, training seconds, `uptime` load and the probe accuracies. The numbers of the table in
docs/results.md ("Main-job designs") come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from main_job import scores

BASE = ["--preset", "quickstart"]
# name -> overrides on top of the quickstart preset (what each line of the design table tried)
DESIGNS: dict[str, list[str]] = {
    "old-quickstart": ["data.shapes.n_train=2000", "train.epochs=8", "model.width=16", "train.lr=1e-3"],
    "w16-16px-10ep-lr2e-3-cos": [
        "data.shapes.n_train=5000",
        "data.image_size=16",
        "train.epochs=10",
        "model.width=16",
        "train.lr=2e-3",
        "train.schedule=cosine",
    ],
    "w16-16px-10ep-lr4e-3-cos": [
        "data.shapes.n_train=5000",
        "data.image_size=16",
        "train.epochs=10",
        "model.width=16",
        "train.lr=4e-3",
        "train.schedule=cosine",
    ],
    "w8-16px-15ep-lr2e-3-cos": [
        "data.shapes.n_train=5000",
        "data.image_size=16",
        "train.epochs=15",
        "model.width=8",
        "train.lr=2e-3",
        "train.schedule=cosine",
    ],
    "w16-16px-b64-10ep-lr2e-3-cos-t0.2": [
        "data.shapes.n_train=5000",
        "data.image_size=16",
        "train.epochs=10",
        "model.width=16",
        "train.batch_size=64",
        "train.lr=2e-3",
        "train.schedule=cosine",
        "method.temperature=0.2",
    ],
    "w16-16px-b64-10ep-lr2e-3-cos-crop0.2": [
        "data.shapes.n_train=5000",
        "data.image_size=16",
        "train.epochs=10",
        "model.width=16",
        "train.batch_size=64",
        "train.lr=2e-3",
        "train.schedule=cosine",
        "augment.crop_scale=[0.2,1.0]",
    ],
    "w8-16px-15ep-lr5e-3-cos-crop0.2": [
        "data.shapes.n_train=5000",
        "data.image_size=16",
        "train.epochs=15",
        "model.width=8",
        "train.lr=5e-3",
        "train.schedule=cosine",
        "augment.crop_scale=[0.2,1.0]",
    ],
}


def mim(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "mimcli", *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"mim {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return done


def train_and_probe(folder: Path, overrides: list[str]) -> tuple[dict[str, float], float, int]:
    sets = [x for o in overrides for x in ("--set", o)]
    if not (folder / "probe.json").exists():
        mim("pretrain", *BASE, *sets, "--out", str(folder), "--no-progress", "--force")  # probes too
    status = json.loads((folder / "run.json").read_text())
    return scores(folder), float(status.get("train_seconds", 0.0)), int(status["epochs_done"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("designs", nargs="*")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--out", default="runs/designs")
    parser.add_argument("--set", action="append", default=[], help="extra override for every design")
    args = parser.parse_args()
    if args.list or not args.designs:
        for name, overrides in DESIGNS.items():
            print(f"{name}: {' '.join(overrides)}")
        return
    for name in args.designs:
        overrides = DESIGNS[name] + args.set
        load = os.getloadavg()[0]
        start = time.perf_counter()
        trained, seconds, _ = train_and_probe(Path(args.out) / name, overrides)
        arch = [o for o in overrides if not o.startswith(("train.", "regularizer.", "augment.", "method."))]
        init_name = "init-" + "-".join(o.split("=")[1] for o in sorted(arch))
        init, _, _ = train_and_probe(Path(args.out) / init_name, [*arch, "train.epochs=0"])
        wall = time.perf_counter() - start
        print(
            f"{name} | {' '.join(overrides)} | train {seconds:.0f} s | wall {wall:.0f} s | load {load:.1f} | "
            f"shape {trained['shape']:.1f} (init {init['shape']:.1f}) | hue {trained['hue']:.1f} "
            f"(init {init['hue']:.1f}) | position {trained['position']:.3f} (init {init['position']:.3f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
