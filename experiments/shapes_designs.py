"""Screen main-job designs on `shapes`: SimCLR and a random-init network, shape / hue / position, steps and time.

    python experiments/shapes_designs.py DESIGN [DESIGN ...]   # names from DESIGNS below; --list to see them

Each design is the quickstart preset as it was before the redesign of the main job (OLD_QUICKSTART) plus overrides, so
that every line of the table keeps its meaning now that the preset is the screen's winner. For each it
pretrains SimCLR, probes it, and probes the same architecture at train.epochs=0 (random init, cached
per architecture), then prints steps, training and probe CPU-seconds, `uptime` load, the paper's probe
accuracies and a standardised (scale-free) probe's. The numbers of the design screen in docs/results.md
(the redesign of the main job) come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # main_job
from main_job import cached_probe_accuracy, cpu_seconds, scores

from mimcli.data.shapes import TASKS
from mimcli.rundir.runs import load_run_config

# the quickstart preset before the main job was redesigned: textured background, glyphs anywhere, the paper's views,
# temperature and probe (raw features)
OLD_QUICKSTART = [
    "data.shapes.background=textured",
    "data.shapes.layout=scattered",
    "probe.features=raw",
    "augment.crop_scale=[0.08,1.0]",
    "augment.hue=0.2",
    "method.temperature=0.5",
    "train.epochs=8",
    "train.lr=1e-3",
    "train.schedule=constant",
    "train.warmup_epochs=0",
]
BASE = ["--preset", "quickstart", *(x for o in OLD_QUICKSTART for x in ("--set", o))]
# the second screen's common settings: plain background, 180 steps at Adam 2e-3 with warm-up + per-step cosine,
# hue jitter anywhere on the circle
SCREEN = [
    "data.shapes.background=plain",
    "train.epochs=12",
    "train.lr=2e-3",
    "train.schedule=warmup_cosine",
    "train.warmup_epochs=1",
    "augment.hue=0.5",
]
NO_CROP = ["augment.crop_scale=[1.0,1.0]"]
# width 8 for twice the epochs: about the preset's CPU-seconds, spent on a narrower network
WIDTH8_SAME_COMPUTE = ["method.temperature=0.2", "model.width=8", "train.epochs=24"]
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
    # the second screen: a plain background (data.shapes.background) and stronger colour jitter
    "plain-24ep-lr1e-3-curve": [  # run as `mim sweep epochs --values 4,8,12,24` (constant lr: one curve)
        "data.shapes.background=plain",
        "train.epochs=24",
    ],
    "plain-12ep-lr2e-3-wcos-hue0.5-crop0.2-t0.2": [*SCREEN, "augment.crop_scale=[0.2,1.0]", "method.temperature=0.2"],
    "plain-16px-b64-27ep-lr2e-3-wcos-hue0.5-crop0.2-t0.2": [
        *SCREEN,
        "data.image_size=16",
        "train.batch_size=64",
        "train.epochs=27",
        "augment.crop_scale=[0.2,1.0]",
        "method.temperature=0.2",
    ],
    "plain-b32-10ep-lr1e-3-wcos-hue0.5-crop0.2-t0.2": [
        *SCREEN,
        "train.batch_size=32",
        "train.epochs=10",
        "train.lr=1e-3",
        "augment.crop_scale=[0.2,1.0]",
        "method.temperature=0.2",
    ],
    "plain-12ep-lr2e-3-wcos-hue0.5-crop0.5-t0.2": [*SCREEN, "augment.crop_scale=[0.5,1.0]", "method.temperature=0.2"],
    "plain-12ep-lr2e-3-wcos-hue0.5-crop0.8-t0.2": [*SCREEN, "augment.crop_scale=[0.8,1.0]", "method.temperature=0.2"],
    "plain-12ep-lr4e-3-wcos-hue0.5-crop0.8-t0.1": [
        *SCREEN,
        "train.lr=4e-3",
        "augment.crop_scale=[0.8,1.0]",
        "method.temperature=0.1",
    ],
    # the winner: the quickstart presets since the redesign
    "plain-12ep-lr2e-3-wcos-hue0.5-crop1-t0.2": [*SCREEN, *NO_CROP, "method.temperature=0.2"],
    "plain-12ep-lr2e-3-wcos-hue0.5-crop1-ratio1-t0.2": [
        *SCREEN,
        *NO_CROP,
        "augment.crop_ratio=[1.0,1.0]",
        "method.temperature=0.2",
    ],
    "plain-12ep-lr2e-3-wcos-hue0.5-crop1": [*SCREEN, *NO_CROP],
    "plain-12ep-lr2e-3-wcos-hue0.5-crop1-t0.1": [*SCREEN, *NO_CROP, "method.temperature=0.1"],
    "plain-15ep-lr2e-3-wcos-hue0.5-crop1-t0.2": [*SCREEN, *NO_CROP, "train.epochs=15", "method.temperature=0.2"],
    # the same compute as the preset (12 epochs of 2,000 images) in more, smaller steps, or a narrower network
    "plain-b64-12ep-lr2e-3-wcos-hue0.5-crop1-t0.2": [
        *SCREEN,
        *NO_CROP,
        "method.temperature=0.2",
        "train.batch_size=64",
    ],
    "plain-12ep-lr3e-3-wcos-hue0.5-crop1-t0.2": [*SCREEN, *NO_CROP, "method.temperature=0.2", "train.lr=3e-3"],
    "plain-w8-24ep-lr4e-3-wcos-hue0.5-crop1-t0.2": [*SCREEN, *NO_CROP, *WIDTH8_SAME_COMPUTE, "train.lr=4e-3"],
    "plain-w8-24ep-lr2e-3-wcos-hue0.5-crop1-t0.2": [*SCREEN, *NO_CROP, *WIDTH8_SAME_COMPUTE],
    "textured-12ep-lr2e-3-wcos-hue0.5-crop1-t0.2": [
        *SCREEN,
        *NO_CROP,
        "data.shapes.background=textured",
        "method.temperature=0.2",
    ],
    # third screen: what keeps SimCLR from shape at 180 steps when a supervised network learns it at once
    "plain-...-crop1-t0.2-translate4": [*SCREEN, *NO_CROP, "method.temperature=0.2", "augment.translate=4"],
    "plain-...-crop1-t0.2-fp32": [*SCREEN, *NO_CROP, "method.temperature=0.2", "train.precision=fp32"],
    "plain-24px-20ep-...-crop1-t0.2": [
        *SCREEN,
        *NO_CROP,
        "method.temperature=0.2",
        "data.image_size=24",
        "train.epochs=20",
    ],
    # the ceiling: the same network, data, views and steps trained on the shape labels (method supervised)
    "plain-...-crop1-supervised": [*SCREEN, *NO_CROP, "method.name=supervised"],
    # the winner: the quickstart presets since the third screen (glyph centred, standardised probe)
    "centred-plain-12ep-lr2e-3-wcos-hue0.5-crop1-t0.2": [
        *SCREEN,
        *NO_CROP,
        "method.temperature=0.2",
        "data.shapes.layout=centred",
    ],
}


def mim(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "mimcli", *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"mim {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return done


def train_and_probe(folder: Path, overrides: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Probe scores, and cost: steps, training wall / CPU seconds, probe CPU seconds (0 when cached)."""
    sets = [x for o in overrides for x in ("--set", o)]
    cost = {"train_cpu": 0.0, "probe_cpu": 0.0}
    if not (folder / "probe.json").exists():
        start = cpu_seconds()
        command = "supervised" if "method.name=supervised" in overrides else "pretrain"
        mim(command, *BASE, *sets, "--set", "probe.datasets=[]", "--out", str(folder), "--no-progress", "--force")
        middle = cpu_seconds()
        scattered = load_run_config(folder).data.shapes.layout == "scattered"  # centred glyphs have no position
        tasks = [t for t in TASKS if t != "position" or scattered]
        mim("probe", str(folder), "--datasets", ",".join(f"shapes:{task}" for task in tasks))
        cost = {"train_cpu": middle - start, "probe_cpu": cpu_seconds() - middle}
    status = json.loads((folder / "run.json").read_text())
    config = load_run_config(folder)
    steps = int(status["epochs_done"]) * (config.data.shapes.n_train // config.train.batch_size)
    cost.update(steps=steps, train_wall=float(status.get("train_seconds", 0.0)))
    return scores(folder), cost


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
        trained, cost = train_and_probe(Path(args.out) / name, overrides)
        arch = [o for o in overrides if not o.startswith(("train.", "regularizer.", "augment.", "method."))]
        init_name = "init-" + "-".join(o.split("=")[1] for o in sorted(arch))
        init, _ = train_and_probe(Path(args.out) / init_name, [*arch, "train.epochs=0"])
        wall = time.perf_counter() - start
        per_step = cost["train_cpu"] / max(cost["steps"], 1)
        fair, fair_init = (
            cached_probe_accuracy(Path(args.out) / name),
            cached_probe_accuracy(Path(args.out) / init_name),
        )
        print(
            f"{name} | {' '.join(overrides)} | {cost['steps']:.0f} steps | train {cost['train_wall']:.0f} s wall, "
            f"{cost['train_cpu']:.0f} CPU-s ({per_step:.2f} per step) | probe {cost['probe_cpu']:.0f} CPU-s | "
            f"wall {wall:.0f} s | load {load:.1f} | "
            f"shape {trained['shape']:.1f} (init {init['shape']:.1f}) | hue {trained['hue']:.1f} "
            f"(init {init['hue']:.1f}) | "
            + (f"position {trained['position']:.3f} (init {init['position']:.3f}) | " if "position" in trained else "")
            + f"standardised probe: shape {fair['shape']:.1f} (init {fair_init['shape']:.1f}) | "
            f"hue {fair['hue']:.1f} (init {fair_init['hue']:.1f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
