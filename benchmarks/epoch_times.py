"""Seconds per CIFAR-10-sized epoch, the code before a change against the code now, in one run.

    python benchmarks/epoch_times.py --before .lease/before --out $OUT --write   # GPU: batch 512, 50,000 images
    python benchmarks/epoch_times.py --before .lease/before --dry-run --out /tmp/e  # CPU, tiny sizes

`--before` is a folder holding an older `mimcli` package (`benchmarks/gpu_lease.sh prepare` unpacks
one from git); each tree is timed in its own process (`gpu_check.epoch_time`: a warm-up epoch, then
one timed epoch of synthetic uint8 images, ResNet-18, eager, default precision), in turn, and each
tree's rows are written to --out as soon as they are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_table import machine, markdown_table, save

REPO = Path(__file__).resolve().parents[1]
CASES = [("none", 64), ("rc", 64), ("lbe", 64), ("none", 16), ("rc", 16)]


def time_tree(tree: Path, size: str) -> list[dict[str, Any]]:
    """gpu_check.epoch_time for every case, in a process that imports mimcli from `tree`."""
    batch, images, device = {"dry": (16, 64, "cpu"), "cpu": (64, 512, "cpu")}.get(size, (512, 50_000, "auto"))
    cases = {"dry": [("none", 8), ("rc", 8)], "cpu": [("none", 16), ("rc", 16)]}.get(size, CASES)
    # on the GPU the current tree also times one untried setting, cuDNN's autotuner (no effect on the CPU)
    variant = size == "gpu" and tree == REPO
    code = (
        f"import json, sys, torch; sys.path.insert(1, {str(REPO / 'benchmarks')!r}); from gpu_check import epoch_time\n"
        "import mimcli; print('mimcli from', mimcli.__file__, file=sys.stderr)\n"
        f"rows = [epoch_time(k, w, {batch}, False, {images}, {device!r}) for k, w in {cases!r}]\n"
        f"if {variant}:\n"
        "    torch.backends.cudnn.benchmark = True\n"
        f"    rows.append(epoch_time('none', 64, {batch}, False, {images}, {device!r}))\n"
        "    rows[-1]['method'] += ', cudnn.benchmark'\n"
        "print(json.dumps(rows))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    if size != "gpu":  # one thread: on a shared CPU, more only wait for each other
        env["OMP_NUM_THREADS"] = "1"
    # the working directory comes first on sys.path: run in the tree, so its mimcli is the one imported
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr[-3000:])
    if done.returncode:
        raise SystemExit(f"timing {tree} failed ({done.returncode})")
    rows: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="folder with the older mimcli package")
    parser.add_argument("--label", default="before", help="what the older tree is called in the table")
    parser.add_argument("--dry-run", action="store_true", help="CPU, width 8, batch 16, 64 images")
    parser.add_argument("--cpu", action="store_true", help="CPU, width 16, batch 64, 512 images")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the trees N times; the fastest epoch counts")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--write", action="store_true", help="also update docs/benchmarks.md (not with --dry-run)")
    args = parser.parse_args()
    if not (args.before / "mimcli" / "__init__.py").is_file():
        sys.exit(f"--before {args.before}: no mimcli package there (benchmarks/gpu_lease.sh prepare makes one)")
    args.out.mkdir(parents=True, exist_ok=True)
    size = "dry" if args.dry_run else "cpu" if args.cpu else "gpu"
    name = "epoch_times_cpu" if size == "cpu" else "epoch_times"  # a CPU check does not replace the GPU's figures
    key = "s/epoch (50k)" if size == "gpu" else "CPU s/epoch (50k)"  # what "fastest" means
    measured: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.repeats):
        for label, tree in ((args.label, args.before.resolve()), ("now", REPO)):
            timed = time_tree(tree, size)
            best = measured.get(label, timed)
            measured[label] = [min(a, b, key=lambda r: r[key]) for a, b in zip(best, timed)]
            (args.out / f"{name}.json").write_text(json.dumps({"machine": machine(), **measured}, indent=2))
            print(label, json.dumps(timed), flush=True)
    rows = []
    for old, new in zip(measured[args.label], measured["now"]):
        rows.append(
            {
                "method": new["method"],
                "width": new["width"],
                "batch": new["batch"],
                f"s/epoch {args.label}": old["s/epoch (50k)"],
                "s/epoch now": new["s/epoch (50k)"],
                "speedup": old["s/epoch (50k)"] / new["s/epoch (50k)"],
                "img/s now": new["img/s"],
            }
        )
        if size != "gpu":  # process CPU time: on a shared CPU the wall time mostly measures the other jobs
            rows[-1][f"CPU s/epoch {args.label}"] = old["CPU s/epoch (50k)"]
            rows[-1]["CPU s/epoch now"] = new["CPU s/epoch (50k)"]
    for new in measured["now"][len(rows) :]:  # settings tried on the current tree alone
        rows.append({"method": new["method"], "width": new["width"], "batch": new["batch"]})
        rows[-1].update({"s/epoch now": new["s/epoch (50k)"], "img/s now": new["img/s"]})
    flags = {"dry": " --dry-run", "cpu": " --cpu"}.get(size, "")
    flags += f" --repeats {args.repeats}" if args.repeats > 1 else ""
    command = f"python benchmarks/epoch_times.py --before {args.before}{flags}"
    repeats = "; the fastest of the alternating repeats (by CPU time on a CPU)" if args.repeats > 1 else ""
    text = (
        f"## Epoch times before and after: {machine()}\n\n`{command}`: one epoch (synthetic 32 x 32 uint8, "
        "data on the device) after a warm-up epoch, eager, default precision, each code tree in its own "
        f"process, scaled to 50,000 images{repeats}."
        f"\n\n{markdown_table(rows, list(rows[0]))}"
    )
    save(name, measured, text, args.out, args.write and not args.dry_run)


if __name__ == "__main__":
    main()
