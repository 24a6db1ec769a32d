"""Bias and spread of the mutual-information estimators on correlated Gaussians, at the diagnostics' batch size.

x, y in R^d with corr(x_k, y_k) = rho, independent across k: I = -d/2 log(1 - rho^2) nats. For each
case, `--seeds` independent batches of N samples (N = 256, train.diagnostics_images' default);
the table gives the mean and standard deviation over seeds of (d up to 192, the dimension of v):

  KSG        mimcli.train.mutual_information.ksg (k = 3)
  InfoNCE    infonce(cosine_scores(x, y)), the fixed critic the diagnostics use (temperature 0.1)
  Renyi      renyi_mutual_information with the RMS-distance kernel width (what the diagnostics use)
  Renyi, Silverman   the same with Silverman's width N^(-1/(4+d)) sqrt(tr Cov), for comparison

The Renyi quantity is not Shannon's I, so its "bias" is not defined: read its independent rows (rho = 0)
as its floor and the rest for how it grows with rho.

    python experiments/information_estimators.py [--seeds 20] [--write]   (--write: docs/information.md)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # docs_table
from docs_table import machine, markdown_table, update_section

from mimcli.train.mutual_information import (
    correlated_gaussians,
    cosine_scores,
    gaussian_gram,
    gaussian_mutual_information,
    infonce,
    kernel_width,
    ksg,
    renyi_mutual_information,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "information.md"
CASES = [(1, 0.0), (1, 0.5), (1, 0.9), (4, 0.0), (4, 0.5), (4, 0.9), (16, 0.0), (16, 0.5)]
# the diagnostics' real dimensions: z has 128 (ResNet-18 width 16, layer 4), v 192 (8 x 8 x 3 pixels)
CASES += [(128, 0.0), (128, 0.1), (192, 0.0), (192, 0.1)]


def silverman(x: torch.Tensor) -> float:
    n, d = x.shape
    return kernel_width(x) / math.sqrt(2) * n ** (-1.0 / (4 + d))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rows = []
    for dims, rho in CASES:
        values: dict[str, list[float]] = {"KSG": [], "InfoNCE": [], "Renyi": [], "Renyi, Silverman": []}
        for seed in range(args.seeds):
            x, y = correlated_gaussians(args.n, dims, rho, torch.Generator().manual_seed(seed))
            values["KSG"].append(ksg(x, y).item())
            values["InfoNCE"].append(infonce(cosine_scores(x, y)).item())
            values["Renyi"].append(renyi_mutual_information(gaussian_gram(x), gaussian_gram(y)).item())
            values["Renyi, Silverman"].append(
                renyi_mutual_information(gaussian_gram(x, silverman(x)), gaussian_gram(y, silverman(y))).item()
            )
        row: dict[str, object] = {"d": dims, "rho": rho, "true I": gaussian_mutual_information(rho, dims)}
        for name, found in values.items():
            t = torch.tensor(found, dtype=torch.float64)
            row[name] = f"{t.mean().item():.3f} ± {t.std().item():.3f}"
        rows.append(row)
    columns = ["d", "rho", "true I", "KSG", "InfoNCE", "Renyi", "Renyi, Silverman"]
    table = markdown_table(rows, columns)
    print(table)
    if args.write:
        body = (
            f"Mean ± standard deviation over {args.seeds} seeds, N = {args.n}, nats "
            f"({machine()}; `python experiments/information_estimators.py --write`).\n\n{table}"
        )
        print(f"wrote {update_section('information_estimators', body, DOC)}")


if __name__ == "__main__":
    main()
