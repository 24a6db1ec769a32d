"""The report's 30-epoch CIFAR-10 table on one GPU: SimCLR, SimCLR + RC, SimCLR + LBE, ours beside the report's.

    python experiments/reproduce_report.py --archive data/cifar10-jpeg.tar.gz --out $OUT            # GPU, ~3-5 min
    python experiments/reproduce_report.py --archive data/cifar10-jpeg.tar.gz --dry-run --out /tmp/r  # CPU, a few steps

Recipe (docs/reference.md#training-recipe, presets simclr / simclr-rc / simclr-lbe): ResNet-18 width 64,
CIFAR-10 train split (50,000 images), 30 epochs, batch 256, Adam 3e-4, lambda 1; linear probe of
the pooled layer-4 features, 100 epochs (the paper's best-test rule, plus the held-out-selected
accuracy). CIFAR-10 is read from a JPEG archive (--archive; a GPU machine may be offline), so the
source probe is `imagefolder:<cifar10-jpeg>`; `colourstats:<cifar10-jpeg>` (mean colour and
saturation, non-shared by construction) is probed too, and every transfer set of the presets found
under --transfer-root (dtd, mnist, ...); missing ones are listed as missing, not fatal.
JPEG re-encoding costs a little accuracy against the PNG-exact data (docs/development.md), so read the
difference to the report as "close or not", not to the decimal.

Writes reproduce_report.json and reproduce_report.md to --out after each model (so a run stopped by a
time limit still returns the models that finished, marked `"complete": false`), and copies each
finished run's metrics.jsonl and probe.json to OUT/runs/<preset>/; --write also puts the table into
docs/benchmarks.md as it grows (not in --dry-run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # docs_table
from docs_table import machine, markdown_table, update_section

REPO = Path(__file__).resolve().parents[1]
MODELS = {"simclr": "SimCLR", "simclr-rc": "SimCLR + RC", "simclr-lbe": "SimCLR + LBE"}
REPORT_LINEAR = {"SimCLR": 76.91, "SimCLR + RC": 77.31, "SimCLR + LBE": 76.74}  # report, Table (30 epochs)
TRANSFER = ["dtd", "mnist", "fashionmnist", "cub200", "flowers102", "gtsrb"]
DRY = [
    "model.width=8",
    "train.epochs=1",
    "train.batch_size=32",
    "probe.epochs=2",
    "train.device='cpu'",
    "train.threads=1",
]


def extract(archive: Path, target: Path, per_class: int | None) -> Path:
    """Unpack the archive (all of it, or the first `per_class` train and test JPEGs of each class)."""
    with tarfile.open(archive) as tar:
        members = [
            m for m in tar.getmembers() if per_class is None or not m.isfile() or int(Path(m.name).stem) < per_class
        ]
        tar.extractall(target, members=members, filter="data")
    return target / "cifar10-jpeg"


def mim_command(*args: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return [sys.executable, "-m", "mimcli", *args], env


def mim(*args: str, allowed: tuple[int, ...] = (0,), log: Path | None = None) -> None:
    """One `mim` command; its output goes to `log` when given (so a lease that times out shows the epochs
    it reached), else is kept for the error message."""
    command, env = mim_command(*args)
    with open(log, "a") if log else contextlib.nullcontext() as sink:
        done = subprocess.run(
            command, env=env, text=True, stdout=sink or subprocess.PIPE, stderr=subprocess.PIPE, check=False
        )
    if done.returncode not in allowed:
        sys.exit(f"mim {' '.join(args[:3])} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")


def epoch_seconds(run: Path) -> float:
    """Median seconds per pretraining epoch, the first (warm-up: cuDNN autotuning, allocator) left out."""
    epochs = [json.loads(line)["seconds"] for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    timed = sorted(epochs[1:] or epochs)
    return timed[len(timed) // 2]


def results(run: Path) -> dict[str, dict[str, Any]]:
    return {r["dataset"]: r for r in json.loads((run / "probe.json").read_text())["results"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, required=True, help="cifar10-jpeg.tar.gz (see docs/development.md)")
    parser.add_argument("--out", type=Path, required=True, help="folder for reproduce_report.json and .md")
    parser.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="keep the three runs here (default: a temporary folder, so checkpoints do not travel)",
    )
    parser.add_argument("--transfer-root", default="data", help="where transfer data sets (dtd, mnist, ...) live")
    parser.add_argument("--epochs", type=int, default=30, help="pretraining epochs (the report's 30)")
    parser.add_argument("--dry-run", action="store_true", help="20 images per class, width 8, 1 epoch, CPU")
    parser.add_argument(
        "--per-class", type=int, default=None, help="first N train and test images of each class (a quick GPU check)"
    )
    parser.add_argument("--write", action="store_true", help="also update docs/benchmarks.md")
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"presets to train, in order (default {','.join(MODELS)})"
    )
    args = parser.parse_args()
    models = {preset: MODELS[preset] for preset in args.models.split(",") if preset in MODELS}
    if not models:
        sys.exit(f"--models {args.models}: none of {', '.join(MODELS)}")
    if not args.archive.is_file():
        sys.exit(f"CIFAR-10 archive not found: {args.archive} (pass --archive)")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    text = ""
    with tempfile.TemporaryDirectory() as scratch:
        root = extract(args.archive, Path(scratch), 20 if args.dry_run else args.per_class)
        print(f"extracted {root} in {time.perf_counter() - start:.0f} s", flush=True)
        transfer = [] if args.dry_run else TRANSFER
        probes = [f"imagefolder:{root}", f"colourstats:{root}"]  # transfer sets are probed apart, below
        runs = {preset: (args.runs or Path(scratch) / "runs") / preset for preset in models}
        sets = [
            "data.dataset='imagefolder'",
            f"data.root='{root}'",
            "data.download=false",
            f"probe.datasets={json.dumps(probes)}",
            f"train.epochs={args.epochs}",
            *(DRY if args.dry_run else []),
        ]
        options = [x for s in sets for x in ("--set", s)]
        for preset, label in models.items():
            run = runs[preset]
            began = time.perf_counter()
            print(f"{label}: pretraining {args.epochs} epochs, then probing (log: {args.out / 'runs.log'})", flush=True)
            mim(
                *["pretrain", "--preset", preset, *options, "--out", str(run), "--force", "--no-progress"],
                log=args.out / "runs.log",
            )
            if transfer:  # transfer sets live elsewhere; exit 1 means some are missing, which probe.json records
                mim(
                    "probe",
                    str(run),
                    "--datasets",
                    ",".join(transfer),
                    "--data-root",
                    args.transfer_root,
                    allowed=(0, 1),
                )
            found = results(run)
            source = found[f"imagefolder:{root}"]["metrics"]
            row: dict[str, Any] = {
                "model": label,
                "cifar10 (ours)": source["acc_best_test"]["mean"],
                "cifar10 (report)": REPORT_LINEAR[label],
                "difference": source["acc_best_test"]["mean"] - REPORT_LINEAR[label],
                "cifar10 val-selected": source["acc_val_selected"]["mean"],
                "colour R²": found[f"colourstats:{root}"]["metrics"]["r2"]["mean"],
            }
            for name in transfer:
                record = found.get(name, {})
                row[name] = record["metrics"]["acc_best_test"]["mean"] if record.get("status") == "ok" else "missing"
            row["s/epoch"] = epoch_seconds(run)
            row["train+probe s"] = time.perf_counter() - began
            print(json.dumps(row), flush=True)
            rows.append(row)
            kept = args.out / "runs" / preset
            kept.mkdir(parents=True, exist_ok=True)
            for name in ("metrics.jsonl", "probe.json"):
                if (kept / name).resolve() != (run / name).resolve():  # --runs may already be inside --out
                    shutil.copyfile(run / name, kept / name)
            text = write_records(args, rows, time.perf_counter() - start, len(models))
    print(text)


def write_records(args: argparse.Namespace, rows: list[dict[str, Any]], seconds: float, models: int) -> str:
    """reproduce_report.json and .md in --out (and docs/benchmarks.md with --write) for the rows so far."""
    table = markdown_table(rows, list(rows[0]))
    complete = len(rows) == models
    mode = (
        "dry run (CPU, 20 images per class, width 8, 1 epoch: checks the script, not the numbers)"
        if args.dry_run
        else f"ResNet-18, CIFAR-10 JPEGs ({f'{args.per_class} per class' if args.per_class else 'all 50,000'}), "
        f"{args.epochs} epochs, batch 256, Adam 3e-4, lambda 1"
    )
    text = (
        f"## Report's 30-epoch table: {machine()}\n\n`python experiments/reproduce_report.py`: {mode}. "
        f"Linear probe, best test accuracy over 100 epochs (the report's rule); s/epoch is the median "
        f"pretraining epoch after the first. {seconds:.0f} s in all"
        f"{'' if complete else f' ({len(rows)} of {models} models finished)'}.\n\n{table}"
    )
    record = {"machine": machine(), "dry_run": args.dry_run, "complete": complete, "seconds": seconds, "rows": rows}
    (args.out / "reproduce_report.json").write_text(json.dumps(record, indent=2))
    (args.out / "reproduce_report.md").write_text(text + "\n")
    if args.write and not args.dry_run:
        update_section("reproduce_report", text)
    return text


if __name__ == "__main__":
    main()
