"""Wall time and outcome of the README's main job, `mim sweep regularizers --preset quickstart`, from nothing.

    python benchmarks/main_job.py            # time + shape / hue vs random init; --write records it
    python benchmarks/main_job.py --set train.threads=1    # extra overrides for every run (e.g. a loaded machine)

Runs in a fresh temporary folder (data generated, three runs trained and probed, table printed), the way
a user on a fresh machine runs it, and times that. Then, outside the timed part, it probes the same
network at random init (train.epochs=0) and checks the main job's targets (docs/benchmarks.md, "Main
job"): SimCLR's shape accuracy >= 70 % and its hue accuracy at least 10 points below random init's (with
the preset's standardised probe; the paper's probe on the raw features is printed beside it); and the
whole job under 3 minutes on 2 CPU cores. The 1-minute load average before and after is printed, because
a shared machine inflates the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import h5py
import torch
from docs_table import machine, update_section

from mimcli.probe.linear import LinearParams, linear_probe
from mimcli.probe.stats import standardize

COMMAND = ["mim", "sweep", "regularizers", "--preset", "quickstart", "--no-progress"]
LABELS = {"kind-none": "SimCLR", "kind-rc": "SimCLR + RC", "kind-lbe": "SimCLR + LBE", "init": "random init"}
SHAPE_TARGET, HUE_DROP_TARGET, SECONDS_TARGET = 70.0, 10.0, 180.0


def scores(run: Path) -> dict[str, float]:
    """shape / hue (best test accuracy, the paper's rule) and position (R^2) of a probed run."""
    out = {}
    for record in json.loads((run / "probe.json").read_text())["results"]:
        task = record["dataset"].split(":")[-1]
        out[task] = float(record["metrics"]["r2" if task == "position" else "acc_best_test"]["mean"])
    return out


def cached_probe_accuracy(folder: Path, standardise: bool = True) -> dict[str, float]:
    """shape / hue accuracy of the paper's linear probe on a run's cached layer-4 features, standardised
    (each dimension scaled by the train split's mean and std: scale-free) or raw (the paper's probe: SGD
    at lr 0.01 barely moves on a random-init network whose features are ~100x smaller than a trained
    one's, so its init accuracy measures the features' scale as much as their information)."""
    out = {}
    for task in ("shape", "hue"):
        split = {}
        for name in ("train", "test"):
            (path,) = (folder / "features").glob(f"shapes-*-{name}-*.h5")
            with h5py.File(path) as handle:
                split[name] = (torch.from_numpy(handle["layer4"][()]), torch.from_numpy(handle["targets"][task][()]))
        (train_x, train_y), (test_x, test_y) = split["train"], split["test"]
        if standardise:
            train_x, test_x = standardize(train_x, test_x)
        metrics = linear_probe(train_x, train_y, test_x, test_y, [0], LinearParams())
        out[task] = float(metrics["acc_best_test"]["mean"])
    return out


def cpu_seconds() -> float:
    """CPU time (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def mim(args: list[str], folder: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "mimcli", *args], cwd=folder, capture_output=True, text=True, check=False, env=env
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="record the result in docs/benchmarks.md")
    parser.add_argument("--set", action="append", default=[], help="override for every run (section.key=value)")
    args = parser.parse_args()
    sets = [x for o in args.set for x in ("--set", o)]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        start, cpu_start = time.perf_counter(), cpu_seconds()
        done = mim([*COMMAND[1:], *sets], folder)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        if done.returncode != 0:
            sys.exit(f"main job failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        load_after = os.getloadavg()[0]
        init = mim(
            [
                "pretrain",
                "--preset",
                "quickstart",
                *sets,
                "--set",
                "train.epochs=0",
                "--out",
                "runs/init",
                "--no-progress",
            ],
            folder,
        )
        if init.returncode != 0:
            sys.exit(f"random-init probe failed: {init.stderr.strip().splitlines()[-1:]}")
        runs = {p.parent.name: scores(p.parent) for p in Path(folder, "runs").glob("*/probe.json")}
        runs.update({p.parent.name: scores(p.parent) for p in Path(folder, "runs").glob("*/*/probe.json")})
        raw = {
            p.parent.name: cached_probe_accuracy(p.parent, standardise=False)
            for p in [*Path(folder, "runs").glob("*/probe.json"), *Path(folder, "runs").glob("*/*/probe.json")]
        }
    tasks = [t for t in ("shape", "hue", "position") if t in runs["kind-none"]]
    heads = {"shape": "shape (shared)", "hue": "hue (non-shared)", "position": "position R²"}
    rows = [
        f"| {LABELS.get(name, name)} | "
        + " | ".join(f"{s[t]:.3f}" if t == "position" else f"{s[t]:.2f}" for t in tasks)
        + " |"
        for name in LABELS
        if (s := runs.get(name))
    ]
    table = "\n".join([f"| model | {' | '.join(heads[t] for t in tasks)} |", "|---|" + "---:|" * len(tasks), *rows])
    print(table)
    raw_line = (
        "the paper's probe on raw layer-4 features (the preset standardises them; on raw features this probe "
        "barely moves at random init, whose features are ~50x smaller, so its init figure measures their scale): "
        + ", ".join(f"{LABELS[n]} shape {a['shape']:.1f} hue {a['hue']:.1f}" for n in LABELS if (a := raw.get(n)))
    )
    print(raw_line)
    simclr, base = runs["kind-none"], runs["init"]
    checks = [
        (
            f"SimCLR shape {simclr['shape']:.1f} % >= {SHAPE_TARGET:.0f} % (random init {base['shape']:.1f} %)",
            simclr["shape"] >= SHAPE_TARGET,
        ),
        (
            f"SimCLR hue {simclr['hue']:.1f} % <= random init {base['hue']:.1f} % - {HUE_DROP_TARGET:.0f}",
            simclr["hue"] <= base["hue"] - HUE_DROP_TARGET,
        ),
        (
            f"{seconds:.0f} s wall < {SECONDS_TARGET:.0f} s "
            f"(load average {load_before:.1f} before, {load_after:.1f} after)",
            seconds < SECONDS_TARGET,
        ),
        (
            f"{cpu:.0f} CPU-s / 2 cores = {cpu / 2:.0f} s < {SECONDS_TARGET:.0f} s (the wall time on 2 quiet cores "
            "if 2 threads halve the time; train.threads=1 runs measure CPU-s without spin-waits)",
            cpu / 2 < SECONDS_TARGET,
        ),
    ]
    for text, ok in checks:
        print(f"{'meets' if ok else 'MISSES'}: {text}")
    command = " ".join(COMMAND[:5] + sets)
    line = f"`{command}`: {seconds:.0f} s wall, {cpu:.0f} CPU-s, load average {load_before:.1f} at the start"
    print(line)
    if args.write:
        verdicts = "\n".join(f"- {'meets' if ok else 'misses'}: {text}" for text, ok in checks)
        text = (
            f"## Main job: {machine()}\n\n`python benchmarks/main_job.py --write"
            f"{''.join(' --set ' + o for o in args.set)}`, in an empty folder (three runs trained and probed, "
            f"table printed; random init probed afterwards, untimed).\n\n{line}.\n\n{table}\n\n{raw_line}\n\n{verdicts}"
        )
        print(f"wrote {update_section('main_job', text)}")


if __name__ == "__main__":
    main()
