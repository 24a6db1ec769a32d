"""Probes on cached frozen features: linear (the paper's protocol), kNN, and ridge regression.

- linear: one linear layer on the raw (not standardised, as in the paper) pooled features; SGD
  lr 0.01, momentum 0.9, 100 epochs, batch 128, lr x0.1 at 60% and 80% of the epochs; test
  accuracy after every epoch. Two numbers per seed:
    acc_best_test     the paper's: model trained on the whole train split, best test accuracy
                      over the epochs (selected on the test set, optimistic);
    acc_val_selected  honest: a second model trained on 90% of the train split (seeded), the
                      epoch with the best accuracy on the held-out 10% (earliest on ties), its
                      test accuracy.
  Every model of a group is trained at once (one batched matmul per step), with hand-written
  gradients equal to nn.Linear + cross-entropy + torch.optim.SGD, on the features' device.
- knn: k = 200, cosine similarity, votes weighted by exp(sim / 0.1), as the InstDisc / SimCLR
  kNN monitor; deterministic, so one value.
- regression (chosen automatically for regression data sets): closed-form ridge with an
  intercept; alpha = a * mean eigenvalue of the centred Gram matrix, a from a log grid chosen by
  MSE on a seeded 10% validation split, then refit on the whole train split. Reports test MSE and
  R^2 (per target dimension, averaged).

Accuracies are in percent. Each metric is {"mean", "std" (sample std, 0 for one seed), "values"}.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from mimcli.config import ProbeSection
from mimcli.data.transfer import TransferDataset, resolve_dataset
from mimcli.errors import DataNotFoundError, UsageError
from mimcli.features import FeatureCache, layer_names
from mimcli.runs import BACKBONE, PROBE, load_run_config, read_json, write_json

FORMAT = 1
PROTOCOLS = ("linear", "knn", "regression")
VAL_FRACTION = 0.1
MOMENTUM = 0.9
GAMMA = 0.1
MILESTONES = (0.6, 0.8)  # fractions of the epochs: 60 and 80 of 100
KNN_K = 200
KNN_TEMPERATURE = 0.1
RIDGE_GRID = tuple(10.0**e for e in range(-6, 3))  # alpha / mean eigenvalue
LINEAR_SELECTION = ("acc_best_test: trained on the whole train split, best test accuracy over epochs (paper); "
                    "acc_val_selected: trained on a seeded 90% of the train split, test accuracy at the epoch "
                    "with the best accuracy on the held-out 10% (earliest on ties)")
RIDGE_SELECTION = ("alpha = a * mean eigenvalue of the centred train Gram matrix, a in 1e-6..1e2 chosen by MSE on a "
                   "seeded 10% validation split, then refit on the whole train split; r2 averaged over target dims")


# --------------------------------------------------------------------------------------------- statistics


def summary(values: list[float]) -> dict[str, Any]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "values": values}


def val_split(n: int, seed: int, fraction: float = VAL_FRACTION) -> tuple[Tensor, Tensor]:
    """(fit index, val index): a seeded random `fraction` of range(n) held out (at least one item)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = max(1, round(fraction * n))
    return order[cut:].sort().values, order[:cut].sort().values


# --------------------------------------------------------------------------------------------- linear


@dataclass(frozen=True)
class LinearParams:
    epochs: int = 100
    lr: float = 0.01
    batch_size: int = 128
    momentum: float = MOMENTUM
    gamma: float = GAMMA

    @property
    def milestones(self) -> list[int]:
        return [round(f * self.epochs) for f in MILESTONES]

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    @classmethod
    def from_config(cls, section: ProbeSection) -> LinearParams:
        return cls(epochs=section.epochs, lr=section.lr, batch_size=section.batch_size)


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run on one intra-op thread on the CPU: the linear and ridge probes' kernels are small (a
    128-row batch, a D x D solve), and waking a second OpenMP thread for each costs more than it
    saves (20x slower on a busy 2-core box). kNN's large similarity matmuls keep torch's threads."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_linear(x: Tensor, y: Tensor, pools: Tensor, seeds: list[int], n_classes: int, params: LinearParams,
               evals: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """Train one linear classifier per row of `pools` (indices into x; equal lengths) at once.

    Model s uses seeds[s] for its initialisation (nn.Linear's U(-1/sqrt(D), 1/sqrt(D)) for weight
    and bias) and its per-epoch shuffles (drawn on the CPU, so every device sees the same batches);
    the last batch of an epoch may be smaller. `evals` are (features (n, D) or (S, n, D), labels (n,)
    or (S, n)); returns, for each, the accuracy in percent after every epoch, (S, epochs), on the CPU.

    The bias is a weight on a constant-1 feature, and the step is written out by hand: with
    g = (softmax - onehot) / B the cross-entropy gradient of the logits, torch.optim.SGD (momentum,
    no dampening) does buf = m * buf + g^T x; w -= lr * buf. That is three kernels per step instead
    of autograd's dozens, which is what makes 100 epochs take seconds on a CPU.
    """
    device = x.device
    n_models, pool_size = pools.shape
    dim = x.shape[1]
    bound = 1 / math.sqrt(dim)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    weight = torch.stack([(torch.rand(n_classes, dim + 1, generator=g) * 2 - 1) * bound for g in generators])
    weight = weight.to(device)
    momentum = torch.zeros_like(weight)
    x = torch.cat([x, torch.ones(len(x), 1, device=device, dtype=x.dtype)], dim=1)
    evals = [(torch.cat([ex, torch.ones(*ex.shape[:-1], 1, device=device, dtype=ex.dtype)], -1), ey)
             for ex, ey in evals]
    minus_one = torch.full((n_models, 1, params.batch_size), -1.0, device=device)
    pools = pools.to(device)
    history = [torch.empty(n_models, params.epochs, device=device) for _ in evals]
    with _one_cpu_thread(device):
        for epoch in range(params.epochs):
            lr = params.lr_at(epoch)
            order = torch.stack([torch.randperm(pool_size, generator=g) for g in generators]).to(device)
            epoch_index = pools.gather(1, order)
            for start in range(0, pool_size, params.batch_size):
                index = epoch_index[:, start:start + params.batch_size]
                size = index.shape[1]
                xb = x.index_select(0, index.flatten()).view(n_models, size, -1)  # (S, B, D + 1)
                yb = y.index_select(0, index.flatten()).view(n_models, 1, size)
                grad = torch.bmm(weight, xb.transpose(1, 2)).softmax(1)  # (S, C, B): classes along dim 1
                grad.scatter_add_(1, yb, minus_one[:, :, :size])
                torch.baddbmm(momentum, grad, xb, beta=params.momentum, alpha=1 / size, out=momentum)
                weight.sub_(momentum, alpha=lr)
            for (ex, ey), acc in zip(evals, history):
                predicted = torch.matmul(weight, ex.transpose(-1, -2)).argmax(1)  # (S, C, n) -> (S, n)
                acc[:, epoch] = (predicted == ey).float().mean(-1) * 100
    return [acc.cpu() for acc in history]


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seeds: list[int],
                 params: LinearParams, n_classes: int | None = None) -> dict[str, dict[str, Any]]:
    """{"acc_best_test": summary, "acc_val_selected": summary} over seeds (see the module docstring)."""
    n_classes = n_classes or int(max(train_y.max(), test_y.max())) + 1
    n = train_x.shape[0]
    everything = torch.arange(n).expand(len(seeds), n)
    (paper_test,) = fit_linear(train_x, train_y, everything, seeds, n_classes, params, [(test_x, test_y)])
    splits = [val_split(n, seed) for seed in seeds]
    fit_index = torch.stack([fit for fit, _ in splits])
    val_index = torch.stack([val for _, val in splits]).to(train_x.device)
    val_acc, honest_test = fit_linear(train_x, train_y, fit_index, seeds, n_classes, params,
                                      [(train_x[val_index], train_y[val_index]), (test_x, test_y)])
    chosen = val_acc.argmax(1, keepdim=True)  # first maximum: the earliest best epoch
    return {
        "acc_best_test": summary(paper_test.max(1).values.tolist()),
        "acc_val_selected": summary(honest_test.gather(1, chosen).flatten().tolist()),
    }


# --------------------------------------------------------------------------------------------- kNN


def knn_predict(train_x: Tensor, train_y: Tensor, test_x: Tensor, n_classes: int, k: int = KNN_K,
                temperature: float = KNN_TEMPERATURE, chunk: int = 512) -> Tensor:
    """Weighted kNN: the k most cosine-similar train items vote with weight exp(sim / temperature)."""
    train = F.normalize(train_x.float(), dim=1)
    k = min(k, train.shape[0])
    predictions = []
    for block in F.normalize(test_x.float(), dim=1).split(chunk):
        similarity, index = (block @ train.T).topk(k, dim=1)
        votes = torch.zeros(block.shape[0], n_classes, device=block.device)
        votes.scatter_add_(1, train_y[index], (similarity / temperature).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


def knn_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
              n_classes: int | None = None) -> dict[str, dict[str, Any]]:
    n_classes = n_classes or int(max(train_y.max(), test_y.max())) + 1
    predictions = knn_predict(train_x, train_y, test_x, n_classes)
    return {"acc": summary([(predictions == test_y).float().mean().item() * 100])}


# --------------------------------------------------------------------------------------------- ridge


class Ridge:
    """Closed-form ridge with an unpenalised intercept, solved for many alphas via one eigendecomposition."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        x, y = x.double(), y.double().reshape(len(y), -1)
        self.x_mean, self.y_mean = x.mean(0), y.mean(0)
        xc = x - self.x_mean
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(xc.T @ xc)
        self.projected = self.eigenvectors.T @ (xc.T @ (y - self.y_mean))
        self.scale = self.eigenvalues.clamp_min(0).mean().item() or 1.0

    def predict(self, x: Tensor, relative_alpha: float) -> Tensor:
        shrink = 1 / (self.eigenvalues.clamp_min(0) + relative_alpha * self.scale)
        coef = self.eigenvectors @ (self.projected * shrink.unsqueeze(1))
        return (x.double() - self.x_mean) @ coef + self.y_mean


def r2_score(y: Tensor, predicted: Tensor) -> float:
    """R^2 per target dimension, averaged (sklearn's 'uniform_average')."""
    y = y.double().reshape(len(y), -1)
    residual = (y - predicted).square().sum(0)
    total = (y - y.mean(0)).square().sum(0).clamp_min(1e-12)
    return (1 - residual / total).mean().item()


def regression_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, seeds: list[int]
                     ) -> dict[str, dict[str, Any]]:
    """{"r2", "mse"} on the test split; alpha chosen per seed on a seeded 10% validation split."""
    test_target = test_y.double().reshape(len(test_y), -1)
    r2s, mses = [], []
    with _one_cpu_thread(train_x.device):
        full = Ridge(train_x, train_y)
        for seed in seeds:
            fit, val = val_split(train_x.shape[0], seed)
            ridge = Ridge(train_x[fit], train_y[fit])
            val_target = train_y[val].double().reshape(len(val), -1)
            errors = [(ridge.predict(train_x[val], a) - val_target).square().mean().item() for a in RIDGE_GRID]
            best = RIDGE_GRID[min(range(len(errors)), key=errors.__getitem__)]
            predicted = full.predict(test_x, best)
            mses.append((predicted - test_target).square().mean().item())
            r2s.append(r2_score(test_target, predicted))
    return {"r2": summary(r2s), "mse": summary(mses)}


# --------------------------------------------------------------------------------------------- runs


def _record(dataset: TransferDataset, protocol: str, layers: list[int]) -> dict[str, Any]:
    return {"dataset": dataset.name, "task": dataset.task, "protocol": protocol, "layers": layers,
            "status": "ok", "message": None, "metrics": {}, "params": {}, "cache_key": None,
            "n_train": None, "n_test": None, "seconds": None}


def _params(protocol: str, linear: LinearParams, seeds: list[int]) -> dict[str, Any]:
    if protocol == "linear":
        return {"epochs": linear.epochs, "lr": linear.lr, "momentum": linear.momentum,
                "batch_size": linear.batch_size, "milestones": linear.milestones, "gamma": linear.gamma,
                "selection": LINEAR_SELECTION, "val_fraction": VAL_FRACTION, "seeds": seeds}
    if protocol == "knn":
        return {"k": KNN_K, "temperature": KNN_TEMPERATURE, "similarity": "cosine", "weighting": "exp(sim/T)"}
    return {"alphas": list(RIDGE_GRID), "selection": RIDGE_SELECTION, "val_fraction": VAL_FRACTION, "seeds": seeds}


def probe_dataset(dataset: TransferDataset, cache: FeatureCache, protocol: str, layers: list[int],
                  seeds: list[int], linear: LinearParams) -> dict[str, Any]:
    """One probe record; a data set that is not on disk (and not cached) gives status 'missing'."""
    protocol = "regression" if dataset.task == "regression" else protocol
    record = _record(dataset, protocol, layers)
    record["params"] = _params(protocol, linear, seeds)
    start = time.perf_counter()
    try:
        train, test = cache.get(dataset)
    except DataNotFoundError as error:
        record.update(status="missing", message=str(error), seconds=round(time.perf_counter() - start, 3))
        return record
    device = cache.device
    train_x, test_x = train.matrix(layers).to(device), test.matrix(layers).to(device)
    train_y, test_y = train.target(dataset.target).to(device), test.target(dataset.target).to(device)
    if protocol == "linear":
        record["metrics"] = linear_probe(train_x, train_y, test_x, test_y, seeds, linear)
    elif protocol == "knn":
        record["metrics"] = knn_probe(train_x, train_y, test_x, test_y)
    else:
        record["metrics"] = regression_probe(train_x, train_y, test_x, test_y, seeds)
    record.update(cache_key=cache.key(dataset.source, dataset.image_size, layers), n_train=len(train),
                  n_test=len(test), seconds=round(time.perf_counter() - start, 3))
    return record


def _existing(path: Path, sha256: str, console: Any) -> list[dict[str, Any]]:
    """Records already in probe.json for the same checkpoint (others are stale and dropped, with a warning)."""
    if not path.is_file():
        return []
    try:
        data = read_json(path)
        results, previous = list(data["results"]), data["checkpoint"]["sha256"]
    except (ValueError, KeyError, TypeError) as error:
        console.print(f"[yellow]warning:[/yellow] {path} is unreadable ({error}); starting it afresh")
        return []
    if previous != sha256:
        console.print(f"[yellow]warning:[/yellow] {path} holds results of another checkpoint "
                      f"({previous[:16]}); replacing them")
        return []
    return results


def merge_records(results: list[dict[str, Any]], record: dict[str, Any]) -> list[dict[str, Any]]:
    """Replace the record with the same (dataset, protocol, layers), else append."""
    def same(other: dict[str, Any]) -> bool:
        return (other.get("dataset"), other.get("protocol"), other.get("layers")) == (
            record["dataset"], record["protocol"], record["layers"])

    return [record if same(r) else r for r in results] if any(map(same, results)) else [*results, record]


def run_probes(run_dir: Path, datasets: list[str] | None = None, protocol: str | None = None,
               layers: list[int] | None = None, seeds: list[int] | None = None, data_root: str | None = None,
               device: str = "auto", console: Any = None, *, weights: str = BACKBONE, out_name: str = PROBE,
               backbone_loader: Any = None) -> dict[str, Any]:
    """Probe a run's backbone (or `weights`, e.g. backbones/epoch-100.pt) on data sets; merge into `out_name`.

    Every None falls back to the run's [probe] section (data_root: data.root). probe.json is
    rewritten atomically after each data set, so finished results survive a later failure.
    """
    from rich.console import Console

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    section = config.probe
    names = list(datasets if datasets is not None else section.datasets)
    if not names:
        raise UsageError("nothing to probe: pass --datasets or set probe.datasets in the run's config")
    protocol = protocol or section.protocol
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown probe protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    layers = sorted(set(layers or section.layers))
    layer_names(layers)
    seeds = list(dict.fromkeys(seeds or section.seeds))
    shapes = (config.data.shapes.n_train, config.data.shapes.n_test, config.data.shapes.seed)
    bound = [resolve_dataset(name, root=data_root or config.data.root, image_size=config.data.image_size,
                             download=config.data.download, shapes=shapes, pretrain_dataset=config.data.dataset)
             for name in names]
    if protocol == "regression":
        wrong = [d.name for d in bound if d.task != "regression"]
        if wrong:
            raise UsageError(f"protocol 'regression' needs continuous targets; {', '.join(wrong)} are "
                             "classification data sets (use linear or knn)")
    console = console or Console()
    cache = FeatureCache(run_dir, weights, device, console, backbone_loader, normalize=section.normalize)
    path = run_dir / out_name
    result = {"format": FORMAT, "run": run_dir.resolve().name,
              "checkpoint": {"path": weights, "sha256": cache.sha256},
              "results": _existing(path, cache.sha256, console)}
    linear = LinearParams.from_config(section)
    for dataset in bound:
        record = probe_dataset(dataset, cache, protocol, layers, seeds, linear)
        result["results"] = merge_records(result["results"], record)
        write_json(path, result)
    print_probe_table(result, console)
    return result


def missing_datasets(result: dict[str, Any], names: list[str]) -> list[str]:
    """Which of `names` have a 'missing' record in a probe result (data not on disk): a partial probe."""
    def key(name: str) -> str:
        kind, sep, arg = name.partition(":")
        return kind.lower() + sep + arg

    gone = {key(r["dataset"]) for r in result.get("results", []) if r.get("status") == "missing"}
    return [name for name in names if key(name) in gone]


def extract_features_distributed(run_dir: Path, config: Any, console: Any = None) -> None:
    """Under DDP every rank encodes its share of each [probe] data set (rank 0 caches the features),
    so that `run_probes` on rank 0 then reads only the cache."""
    shapes = (config.data.shapes.n_train, config.data.shapes.n_test, config.data.shapes.seed)
    cache = FeatureCache(run_dir, BACKBONE, config.train.device, console, None, normalize=config.probe.normalize)
    for name in config.probe.datasets:
        dataset = resolve_dataset(name, root=config.data.root, image_size=config.data.image_size,
                                  download=config.data.download, shapes=shapes, pretrain_dataset=config.data.dataset)
        try:
            cache.get(dataset)
        except DataNotFoundError:
            pass  # rank 0's run_probes reports it as missing


def _format_metric(summary_: dict[str, Any], percent: bool) -> str:
    digits = 2 if percent else 4
    text = f"{summary_['mean']:.{digits}f}"
    return text + f"±{summary_['std']:.{digits}f}" if len(summary_["values"]) > 1 else text


def print_probe_table(result: dict[str, Any], console: Any = None) -> None:
    """A rich table of a probe.json-shaped result (one row per record, one line per metric); the
    messages of records that did not run follow the table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"probes: {result.get('run', '')} ({result.get('checkpoint', {}).get('path', '')})")
    for column in ("dataset", "protocol", "layers", "metric", "value", "n train/test", "s", "status"):
        table.add_column(column, justify="right" if column in ("value", "s") else "left",
                         no_wrap=column in ("metric", "value", "status"))
    notes = []
    for record in result.get("results", []):
        metrics = record.get("metrics") or {}
        names = "\n".join(metrics) or "-"
        values = "\n".join(_format_metric(s, name.startswith("acc")) for name, s in metrics.items()) or "-"
        status = record["status"] if record["status"] == "ok" else f"[red]{record['status']}[/red]"
        if record.get("message"):
            notes.append(f"[red]{record['dataset']}[/red] ({record['protocol']}): {record['message']}")
        sizes = f"{record['n_train']}/{record['n_test']}" if record.get("n_train") is not None else "-"
        seconds = f"{record['seconds']:.1f}" if record.get("seconds") is not None else "-"
        table.add_row(record["dataset"], record["protocol"], ",".join(map(str, record["layers"])), names, values,
                      sizes, seconds, status)
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)
