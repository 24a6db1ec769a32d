"""In which regime LBE's term works on a run's batch: how far apart the pooled features are next to the
critic's scale 1 / rho, and what its gradient then does in the backbone (docs/lbe.md).

LBE's bound -mean_k log sum_l exp(-rho ||z_k - f(v_l)||^2) has two regimes. When the features of a batch
are far apart next to sqrt(1 / rho), each anchor's softmax over the batch sits on a few neighbours and the
term pushes near neighbours apart (a uniformity term). When they are close, the softmax is nearly flat and
the gradient becomes rho times that of the batch's mean squared pairwise distance, that is, of its total
variance: the term then amplifies whatever already varies most in the features, whatever it is.

For one training batch (epoch 0's first, views drawn as in training, batch-norm statistics per view as in
training, weights from a run directory's checkpoint or freshly initialised), this prints per block: the
mean squared pairwise distance against 1 / rho, the effective number of neighbours exp(H(p_k)) against
2N, the softmax weight on the other view of the same image against 1 / 2N, and, in the backbone, the
cosine between the LBE term's gradient and the variance term's, and between LBE's and the method's; and the
batch's layout: the mean squared distance between the two views of an image, and between two images of one
shape class, each over the mean of all pairs.

    python experiments/lbe_regime.py --preset quickstart-lbe                    # random init
    python experiments/lbe_regime.py --preset quickstart-lbe --run RUN_DIR      # a run's last checkpoint

An LBE run's whole checkpoint is loaded (projector included); any other run's backbone.pt only, with the
preset's LBE term measured on it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
from pathlib import Path

import torch

from mimcli.config import load_config
from mimcli.data.batch import Batch
from mimcli.models.viewnorm import view_groups
from mimcli.rundir import runs
from mimcli.train.loop import Trainer, build_trainer, epoch_seed


def flat_grad(term: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def mean_all(squared: torch.Tensor) -> torch.Tensor:
    """Mean squared distance over all pairs of distinct rows."""
    n = squared.shape[0]
    return squared.detach().sum() / (n * (n - 1))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def measure(trainer: Trainer) -> dict[str, object]:
    model = copy.deepcopy(trainer.model).train()  # batch-norm running statistics of the run stay as they are
    seed = epoch_seed(trainer.config.train.seed, 0)
    rng = torch.Generator(trainer.device).manual_seed(seed)
    views, labels = next(trainer.source.batches(trainer.batches(0), seed, rng))
    torch.manual_seed(seed)
    terms = model(Batch(views, labels, model.method.n_views))
    # the features the LBE term saw: one more forward of the same views with the same noise draw
    torch.manual_seed(seed)
    with view_groups(model.method.n_views):
        clean = model.backbone(views)
    noisy = model.regularizer.perturb(clean)
    rho = model.regularizer.rho
    params = list(model.backbone.parameters())
    n = clean["layer4"].shape[0]
    half = n // 2
    other = torch.cat([torch.arange(half, n), torch.arange(0, half)])  # the other view of the same image
    blocks: dict[str, object] = {}
    shape = torch.cat([labels] * (n // labels.shape[0]))
    same = (shape[:, None] == shape[None, :]) & (torch.arange(n)[:, None] % half != torch.arange(n)[None, :] % half)
    variance = torch.zeros(())
    for name, weight in model.regularizer.block_weights.items():
        c, z = clean[name], noisy[name]
        squared = torch.cdist(c, c).pow(2)  # kept in the graph: the variance term below
        p = torch.softmax(-rho * torch.cdist(z, c).pow(2), dim=1)
        entropy = -(p * p.clamp_min(1e-30).log()).sum(1)
        blocks[name] = {
            "weight": weight,
            "mean_sq_distance": float(mean_all(squared)),
            "one_over_rho": 1 / rho,
            "effective_neighbours": float(entropy.detach().exp().mean()),
            "batch": n,
            "weight_on_other_view": float(p[torch.arange(n), other].mean()),
            "uniform_weight": 1 / n,
            "bound": float(-torch.logsumexp(-rho * torch.cdist(z, c).pow(2), dim=1).mean()),
            "floor_minus_log_2n": -math.log(n),
            # how the batch is laid out: the two views of an image, and two images of one shape class, each
            # against the mean over all pairs (1: no closer than any two rows)
            "other_view_over_all": float(squared.detach()[torch.arange(n), other].mean() / mean_all(squared)),
            "same_shape_over_all": float(
                squared.detach()[same & ~torch.eye(n, dtype=torch.bool)].mean() / mean_all(squared)
            ),
        }
        variance = variance + weight * rho * squared.mean()  # the flat-softmax limit of -reg
    g_reg = flat_grad(terms["loss_reg"], params)  # = -d(bound): the direction LBE moves the backbone
    g_var = flat_grad(-variance, params)
    g_method = flat_grad(terms["loss_method"], params)
    return {
        "blocks": blocks,
        "cos_lbe_vs_variance": cosine(g_reg, g_var),
        "cos_lbe_vs_method": cosine(g_reg, g_method),
        "grad_norm_lbe": float(g_reg.norm()),
        "grad_norm_method": float(g_method.norm()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True, help="an LBE preset: the data, views and term measured")
    parser.add_argument("--run", type=Path, help="a run directory whose weights are measured (default: init)")
    parser.add_argument("--set", action="append", default=[], help="config overrides")
    args = parser.parse_args()
    torch.set_num_threads(1)
    whole = args.run is not None and runs.load_run_config(args.run).regularizer.kind == "lbe"
    config = runs.load_run_config(args.run) if whole else load_config(args.preset, args.set)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build_trainer(config, Path(scratch))
        if whole:
            trainer.load_checkpoint(args.run / runs.CHECKPOINT)
        elif args.run is not None:
            state = torch.load(args.run / runs.BACKBONE, map_location="cpu", weights_only=True)
            trainer.model.backbone.load_state_dict(state)
        print(json.dumps({"source": str(args.run or args.preset), "epoch": trainer.epoch, **measure(trainer)}))


if __name__ == "__main__":
    main()
