"""Probes on cached frozen features: linear (the paper's protocol), kNN, and ridge regression.

- features (probe.features): raw, the paper's, or standardized (each dimension centred and scaled
  with the train split's statistics, as MAE's BatchNorm probe) for every protocol below.
- linear: one linear layer on the pooled features (raw in the paper); SGD
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

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from mimcli.config import RunConfig
from mimcli.data.transfer import Fit, TransferDataset, describe_downloads, pending_downloads, resolve_dataset
from mimcli.errors import DataNotFoundError, UsageError
from mimcli.probe.cache import FeatureCache
from mimcli.probe.extract import layer_names
from mimcli.probe.imagenet import (
    STORE_FIT,
    STORE_SIZE,
    ImagenetProbeData,
    augmented_epochs,
    imagenet_params,
    uses_imagenet_recipe,
)
from mimcli.probe.knn import KNN_K, KNN_TEMPERATURE, knn_probe
from mimcli.probe.linear import LINEAR_SELECTION, LinearParams, linear_probe
from mimcli.probe.normalization import probe_normalization
from mimcli.probe.records import ProbeRecord, ProbeResult
from mimcli.probe.ridge import RIDGE_GRID, RIDGE_SELECTION, regression_probe
from mimcli.probe.stats import STANDARDIZE_EPS, VAL_FRACTION, standardize
from mimcli.rundir.lock import folder_lock
from mimcli.rundir.runs import BACKBONE, PROBE, load_run_config, read_json, write_json

FORMAT = 1
PROTOCOLS = ("linear", "knn", "regression")
FEATURES = ("standardized", "raw")  # probe.features: what the probe reads of the cached features


def _record(dataset: TransferDataset, protocol: str, layers: list[int]) -> ProbeRecord:
    return {
        "dataset": dataset.name,
        "task": dataset.task,
        "protocol": protocol,
        "layers": layers,
        "status": "ok",
        "message": None,
        "metrics": {},
        "params": {},
        "cache_key": None,
        "n_train": None,
        "n_test": None,
        "seconds": None,
    }


def _params(protocol: str, linear: LinearParams, seeds: list[int]) -> dict[str, Any]:
    if protocol == "linear":
        return {
            "epochs": linear.epochs,
            "lr": linear.lr,
            "momentum": linear.momentum,
            "batch_size": linear.batch_size,
            "drop_last": linear.drop_last,
            "schedule": linear.schedule,
            "milestones": linear.milestones,
            "gamma": linear.gamma,
            "init": f"N(0, {linear.init_std:g}), bias 0" if linear.init_std is not None else "nn.Linear uniform",
            "selection": LINEAR_SELECTION,
            "val_fraction": VAL_FRACTION,
            "seeds": seeds,
        }
    if protocol == "knn":
        return {"k": KNN_K, "temperature": KNN_TEMPERATURE, "similarity": "cosine", "weighting": "exp(sim/T)"}
    return {"alphas": list(RIDGE_GRID), "selection": RIDGE_SELECTION, "val_fraction": VAL_FRACTION, "seeds": seeds}


def probe_dataset(
    dataset: TransferDataset,
    cache: FeatureCache,
    protocol: str,
    layers: list[int],
    seeds: list[int],
    linear: LinearParams,
    features: str = "raw",
    imagenet: bool = False,
) -> ProbeRecord:
    """One probe record; a data set that is not on disk (and not cached) gives status 'missing'.
    imagenet: the official ImageNet recipe (probe/imagenet.py), linear protocol and raw features only."""
    protocol = "regression" if dataset.task == "regression" else protocol
    if imagenet:
        if protocol != "linear" or features != "raw":
            raise UsageError(
                f"the ImageNet probe recipe is a linear probe on raw features (got protocol {protocol!r}, "
                f"features {features!r})"
            )
        return _probe_imagenet(dataset, cache, layers, seeds, linear)
    record = _record(dataset, protocol, layers)
    record["params"] = {**_params(protocol, linear, seeds), "features": features}
    if features == "standardized":
        record["params"]["standardize_eps"] = STANDARDIZE_EPS
    start = time.perf_counter()
    try:
        train, test = cache.get(dataset)
    except DataNotFoundError as error:
        record["status"], record["message"] = "missing", str(error)
        record["seconds"] = round(time.perf_counter() - start, 3)
        return record
    device = cache.device
    train_x, test_x = train.matrix(layers).to(device), test.matrix(layers).to(device)
    train_y, test_y = train.target(dataset.target).to(device), test.target(dataset.target).to(device)
    if features == "standardized":
        train_x, test_x = standardize(train_x, test_x)
    if protocol == "linear":
        with cache.progress(f"probing {dataset.name}", 2 * linear.epochs, "epochs", every=linear.epochs // 4) as bar:
            record["metrics"] = linear_probe(train_x, train_y, test_x, test_y, seeds, linear, on_epoch=bar.advance)
    elif protocol == "knn":
        record["metrics"] = knn_probe(train_x, train_y, test_x, test_y)
        if len(train) < KNN_K:  # knn_probe votes with every train item: say so and record the k used
            record["params"].update(k=len(train), k_requested=KNN_K)
            if cache.console is not None:
                cache.console.print(
                    f"note: {dataset.name}: kNN k={KNN_K} adjusted to {len(train)}, the train split's size",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
    else:
        record["metrics"] = regression_probe(train_x, train_y, test_x, test_y, seeds)
    record["cache_key"] = cache.key(dataset.source, dataset.image_size, layers)
    record["n_train"], record["n_test"] = len(train), len(test)
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def _probe_imagenet(
    dataset: TransferDataset, cache: FeatureCache, layers: list[int], seeds: list[int], linear: LinearParams
) -> ProbeRecord:
    """eval_lr_imagenet.py: augmented train epochs, Resize(256) + CenterCrop(224) test (probe/imagenet.py)."""
    record = _record(dataset, "linear", layers)
    record["params"] = {
        **_params("linear", linear, seeds),
        "features": "raw",
        "recipe": "imagenet: train RandomResizedCrop(224) + flip each epoch, test Resize(256) + CenterCrop(224)",
    }
    start = time.perf_counter()
    holder = ImagenetProbeData(dataset)
    centred = holder.centred()
    try:
        clean, test = cache.get(centred)
        train_images = holder.images()[0].images
    except DataNotFoundError as error:
        record["status"], record["message"] = "missing", str(error)
        record["seconds"] = round(time.perf_counter() - start, 3)
        return record
    device = cache.device
    mean, std, _ = probe_normalization(dataset.source, train_images, cache.normalize)
    epochs = augmented_epochs(cache.backbone(), train_images, mean, std, layers, device, cache.precision, seed=seeds[0])
    train_y, test_y = clean.target(dataset.target).to(device), test.target(dataset.target).to(device)
    record["metrics"] = linear_probe(
        epochs, train_y, test.matrix(layers).to(device), test_y, seeds, linear, val_x=clean.matrix(layers).to(device)
    )
    record["cache_key"] = cache.key(centred.source, centred.image_size, layers)
    record["n_train"], record["n_test"] = len(clean), len(test)
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def _existing(path: Path, sha256: str, console: Console | None) -> list[ProbeRecord]:
    """Records already in probe.json for the same checkpoint (others are stale and dropped, with a warning
    when `console` is given)."""
    if not path.is_file():
        return []
    try:
        data = read_json(path)
        results, previous = list(data["results"]), data["checkpoint"]["sha256"]
    except (ValueError, KeyError, TypeError) as error:
        if console is not None:
            console.print(f"[yellow]warning:[/yellow] {path} is unreadable ({error}); starting it afresh")
        return []
    if previous != sha256:
        if console is not None:
            console.print(
                f"[yellow]warning:[/yellow] {path} holds results of another checkpoint ({previous[:16]}); "
                "replacing them"
            )
        return []
    return results


def merge_records(results: list[ProbeRecord], record: ProbeRecord) -> list[ProbeRecord]:
    """Replace the record with the same (dataset, protocol, layers, features), else append: a probe on
    standardised features keeps the raw one beside it (a record without params.features is raw)."""

    def key(other: ProbeRecord) -> tuple[Any, ...]:
        features = (other.get("params") or {}).get("features", "raw")
        return other.get("dataset"), other.get("protocol"), other.get("layers"), features

    def same(other: ProbeRecord) -> bool:
        return key(other) == key(record)

    return [record if same(r) else r for r in results] if any(map(same, results)) else [*results, record]


def run_probes(
    run_dir: Path,
    *,
    datasets: list[str] | None = None,
    protocol: str | None = None,
    layers: list[int] | None = None,
    seeds: list[int] | None = None,
    data_root: str | None = None,
    device: str = "auto",
    console: Console | None = None,
    weights: str = BACKBONE,
    out_name: str = PROBE,
    backbone_loader: Callable[[], nn.Module] | None = None,
    show_progress: bool = True,
    identity: str | None = None,
    fixed_norm: tuple[list[float], list[float]] | None = None,
    preprocessing: dict[str, Any] | None = None,
    features: str | None = None,
) -> ProbeResult:
    """Probe a run's backbone (or `weights`, e.g. backbones/epoch-100.pt) on data sets; merge into `out_name`.

    A model mim did not train (mimcli.probe.foreign) passes its backbone_loader, its `identity` (the
    cache's checkpoint hash), its own normalisation `fixed_norm` and the `preprocessing` each record names.
    Every None falls back to the run's [probe] section (data_root: data.root; features: probe.features,
    which is applied to the cached features, so another choice re-extracts nothing). probe.json is
    rewritten atomically after each data set, so finished results survive a later failure, and read,
    merged and replaced under the run's folder_lock, so two probes of one run both keep their results.
    Printing the result is the caller's (mimcli.report.probe_table.print_probe_table). Extraction and
    linear probes show a live bar on a terminal unless `show_progress` is off (then: log lines).
    """
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
    features = features or section.features
    if features not in FEATURES:
        raise UsageError(f"probe features {features!r}: choose {' or '.join(FEATURES)}")

    def bind(name: str, image_size: int, fit: Fit = "squash") -> TransferDataset:
        return resolve_dataset(
            name,
            root=data_root or config.data.root,
            image_size=image_size,
            download=config.data.download,
            shapes=config.data.shapes,
            pretrain_dataset=config.data.dataset,
            fit=fit,
        )

    bound = [bind(name, config.data.image_size) for name in names]
    if protocol == "regression":
        wrong = [d.name for d in bound if d.task != "regression"]
        if wrong:
            raise UsageError(
                f"protocol 'regression' needs continuous targets; {', '.join(wrong)} are "
                "classification data sets (use linear or knn)"
            )
    console = console or Console()
    root = data_root or config.data.root
    pending = pending_downloads(names, root) if config.data.download else []
    if pending:  # said before anything is fetched, so a one-epoch trial does not download gigabytes unannounced
        console.print(describe_downloads(pending, root), highlight=False)
    cache = FeatureCache(
        run_dir,
        weights,
        device,
        console,
        backbone_loader,
        normalize=section.normalize,
        precision=section.precision,
        show_progress=show_progress,
        identity=identity,
        fixed_norm=fixed_norm,
    )
    path = run_dir / out_name
    result: ProbeResult = {
        "format": FORMAT,
        "run": run_dir.resolve().name,
        "checkpoint": {"path": weights, "sha256": cache.sha256},
        "results": _existing(path, cache.sha256, console),
    }
    imagenet = uses_imagenet_recipe(config)
    for name, dataset in zip(names, bound):
        # The ImageNet recipe is a linear probe on raw features of sets held in memory; image folders (ImageNet
        # itself: streamed, too large for augmented epochs in memory), kNN, regression and standardised features
        # keep the paper recipe's cached features, which their record's params say.
        own = (
            imagenet
            and dataset.files is None
            and dataset.task == "classification"
            and protocol == "linear"
            and features == "raw"
        )
        if own:  # decoded at the recipe's 256 px (Resize(256), centre square), not resized from the training size
            dataset = bind(name, STORE_SIZE, STORE_FIT)
        linear = imagenet_params(section) if own else LinearParams.from_config(section)
        record = probe_dataset(dataset, cache, protocol, layers, seeds, linear, features, own)
        if imagenet and not own:
            record["params"]["recipe"] = "paper (the ImageNet recipe covers linear probes on raw, in-memory sets)"
        if preprocessing is not None:
            record["params"]["preprocessing"] = preprocessing
        with folder_lock(run_dir):  # another `mim probe` on this run may have written since: merge into its file
            result["results"] = merge_records(_existing(path, cache.sha256, None), record)
            write_json(path, result)
    return result


def missing_datasets(result: ProbeResult, names: list[str]) -> list[str]:
    """Which of `names` have a 'missing' record in a probe result (data not on disk): a partial probe."""

    def key(name: str) -> str:
        kind, sep, arg = name.partition(":")
        return kind.lower() + sep + arg

    gone = {key(r["dataset"]) for r in result.get("results", []) if r.get("status") == "missing"}
    return [name for name in names if key(name) in gone]


def extract_features_distributed(
    run_dir: Path, config: RunConfig, console: Console | None = None, show_progress: bool = True
) -> None:
    """Under DDP every rank encodes its share of each [probe] data set (rank 0 caches the features),
    so that `run_probes` on rank 0 then reads only the cache."""
    probe = config.probe
    cache = FeatureCache(
        run_dir,
        BACKBONE,
        config.train.device,
        console,
        None,
        normalize=probe.normalize,
        precision=probe.precision,
        show_progress=show_progress,
    )
    for name in config.probe.datasets:
        dataset = resolve_dataset(
            name,
            root=config.data.root,
            image_size=config.data.image_size,
            download=config.data.download,
            shapes=config.data.shapes,
            pretrain_dataset=config.data.dataset,
        )
        with contextlib.suppress(DataNotFoundError):  # rank 0's run_probes reports it as missing
            cache.get(dataset)
