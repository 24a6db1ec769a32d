"""The tables of docs/lbe.md, written from the committed run records under docs/records/lbe/.

Each run folder there holds the small records of one run (config.toml, run.json, metrics.jsonl, probe.json;
never weights). This prints, as markdown: the probe accuracy of every run, and per run with the
gradient-norm diagnostic (train.grad_norm_steps) its per-epoch loss terms and gradient norms.

    python experiments/lbe_tables.py docs/records/lbe/main
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GRAD_KEYS = ("grad_norm_loss_method", "grad_norm_loss_reg", "grad_norm_loss", "grad_cos_loss_method_loss_reg")


def probe_accuracy(run: Path) -> dict[str, float]:
    """data set -> probe accuracy (%, acc_best_test as `mim report`'s default, and acc_val_selected)."""
    path = run / "probe.json"
    if not path.is_file():
        return {}
    out = {}
    for record in json.loads(path.read_text())["results"]:
        if record["status"] == "ok":
            for metric in ("acc_best_test", "acc_val_selected"):
                out[f"{record['dataset']} {metric}"] = record["metrics"][metric]["mean"]
    return out


def metrics(run: Path) -> list[dict[str, float]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def main(root: Path) -> None:
    runs = sorted(p for p in root.iterdir() if p.is_dir())
    columns = [f"shapes:{f} {m}" for m in ("acc_best_test", "acc_val_selected") for f in ("shape", "hue")]
    print("| run | epochs done | shape | hue | shape (val.-selected) | hue (val.-selected) |")
    print("|---|---:|---:|---:|---:|---:|")
    for run in runs:
        acc = probe_accuracy(run)
        cells = [f"{acc[k]:.2f}" if k in acc else "-" for k in columns]
        print(f"| {run.name} | {len(metrics(run))} | {' | '.join(cells)} |")
    for run in runs:
        rows = [m for m in metrics(run) if GRAD_KEYS[0] in m]
        if not rows:
            continue
        print(f"\n{run.name}:\n")
        print("| epoch | loss_method | loss_reg | grad method | grad lambda*reg | grad total | cos(method, reg) |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for m in rows:
            values = [m["loss_method"], m["loss_reg"], *(m[k] for k in GRAD_KEYS)]
            print(f"| {m['epoch']} | " + " | ".join(f"{v:.3f}" for v in values) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
