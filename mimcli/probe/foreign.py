"""Probing a model mim did not train: torchvision:NAME, timm:NAME or another code base's checkpoint.

The probe writes a run-like directory that `mim report` reads beside mim's runs:

  <out>/model.json     what the model is (mimcli.models.foreign.describe): source, label, weights,
                       feature layers, pooling, input size, normalisation
  <out>/backbone.pt    the weights probed (tensors only), so the directory is probed again offline
  <out>/config.toml    the settings of the probe data (data.dataset, data.image_size = input size,
                       data.shapes, probe.*); nothing was trained
  <out>/probe.json     as a run's (each record's params.preprocessing repeats model.json's choices)
  <out>/features/      the HDF5 feature cache
  <out>/metrics.jsonl  with --info: one line, epoch 0, the information estimates (mimcli.train.diagnostics)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from mimcli import distributed
from mimcli.config import RunConfig, load_config
from mimcli.data.augment import BatchAugment
from mimcli.data.images import ImageData
from mimcli.data.source import load_train_data
from mimcli.errors import UsageError
from mimcli.models.foreign import describe, load_saved, rebuild
from mimcli.probe.records import ProbeResult
from mimcli.probe.run import run_probes
from mimcli.rundir import runs
from mimcli.rundir.run_dir import append_metrics
from mimcli.train.diagnostics import KEY, Diagnostics

MODEL = "model.json"
MODEL_FORMAT = 1
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
FAMILIES = ("shapes", "cifar10", "cifar100")  # probe data whose family becomes data.dataset (the report's table)


@dataclass
class ModelOptions:
    """How a foreign model is read and its features taken (None: what the model says, docs/probing.md)."""

    fmt: str = "auto"
    stem: str = "auto"
    feature_layers: list[str] | None = None
    pool: str | None = None
    input_size: int | None = None
    norm: str = "auto"
    seed: int = 0
    overrides: list[str] = field(default_factory=list)

    def given(self) -> list[str]:
        """The options that describe a model, as the command line spells them, when not at their defaults."""
        defaults = ModelOptions()
        names = {"fmt": "--format", "stem": "--stem", "feature_layers": "--feature-layers", "pool": "--pool"}
        names.update({"input_size": "--input-size", "norm": "--norm", "seed": "--seed", "overrides": "--set"})
        return [flag for key, flag in names.items() if getattr(self, key) != getattr(defaults, key)]


def parse_norm(text: str) -> dict[str, Any] | str:
    """--norm: auto (the model's own, else the data set's), dataset, imagenet, or M,M,M/S,S,S."""
    if text in ("auto", "dataset"):
        return text
    if text == "imagenet":
        return {**IMAGENET, "from": "ImageNet constants (--norm imagenet)"}
    try:
        mean_text, std_text = text.split("/")
        mean, std = [float(v) for v in mean_text.split(",")], [float(v) for v in std_text.split(",")]
    except ValueError:
        mean, std = [], []
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise UsageError(
            f"--norm {text!r}: auto, dataset, imagenet, or three means / three stds: 0.5,0.5,0.5/0.2,0.2,0.2"
        )
    return {"mean": mean, "std": std, "from": "--norm"}


def is_foreign_dir(path: Path) -> bool:
    return (Path(path) / MODEL).is_file()


def default_out(source: str) -> Path:
    """runs/probe-<source>: 'torchvision:resnet50' -> runs/probe-torchvision-resnet50."""
    stem = Path(source).stem if Path(source).is_file() else source
    return Path("runs") / ("probe-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "model"))


def _config(
    datasets: list[str] | None, options: ModelOptions, input_size: int, norm: dict[str, Any] | None
) -> RunConfig:
    """The probe directory's config: defaults + --set, the input size as data.image_size, the model's own
    normalisation as augment.mean/std (the views of --info), data.dataset from the first data set's family."""
    keys = [f"data.image_size={input_size}", "train.epochs=0"]
    family = (datasets or [""])[0].partition(":")[0].lower()
    if family in FAMILIES:
        keys.append(f"data.dataset={family}")
    if norm is not None:
        keys += [f"augment.mean={json.dumps(norm['mean'])}", f"augment.std={json.dumps(norm['std'])}"]
    return load_config(None, [*keys, *options.overrides])


def _prepare(out: Path, description: dict[str, Any]) -> None:
    """`out` is new, or a probe directory of the same model source: never a run or a folder mim did not write."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"--out {out} is a file")
    if is_foreign_dir(out):
        held = runs.read_json(out / MODEL).get("model", {})
        if held.get("source") != description["source"]:
            raise UsageError(
                f"{out} holds probes of {held.get('source')!r}: choose another --out for {description['source']}"
            )
        return
    if any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not a probe directory mim wrote: choose another --out")


def identity(weights_sha256: str, description: dict[str, Any]) -> str:
    """The feature cache's checkpoint hash: the weights and how features are taken from them."""
    taken = {k: description.get(k) for k in ("feature_layers", "pool", "kind", "name", "architecture")}
    return hashlib.sha256((weights_sha256 + json.dumps(taken, sort_keys=True)).encode()).hexdigest()


def preprocessing(description: dict[str, Any]) -> dict[str, Any]:
    """What each probe record repeats about how the model saw the images."""
    norm = description.get("normalization")
    return {
        "model": description["label"],
        "feature_layers": description["feature_layers"],
        "pool": description["pool"],
        "input_size": description["input_size"],
        "normalization": norm or "per data set (probe.normalize)",
    }


def write_model_dir(
    source: str, out: Path | None, datasets: list[str] | None, options: ModelOptions
) -> tuple[Path, nn.Module]:
    """The probe directory of a model named by `source` (written or refreshed) and its probe backbone."""
    norm = parse_norm(options.norm)
    base = load_config(None, options.overrides)
    description, state, module = describe(
        source,
        fmt=options.fmt,
        stem=options.stem,
        feature_layers=options.feature_layers,
        pool_how=options.pool,
        input_size=options.input_size,
        normalization=norm if isinstance(norm, dict) else None,
        seed=options.seed,
        default_input_size=base.data.image_size,
    )
    if norm == "dataset":
        description["normalization"] = None
    out = Path(out) if out is not None else default_out(source)
    _prepare(out, description)
    config = _config(datasets, options, description["input_size"], description["normalization"])
    out.mkdir(parents=True, exist_ok=True)
    runs.atomic_torch_save(state, out / runs.BACKBONE)
    runs.save_config(out, config)
    runs.write_json(out / MODEL, {"format": MODEL_FORMAT, "model": description})
    return out, module


def read_model_dir(path: Path) -> tuple[dict[str, Any], nn.Module]:
    """model.json's description and the backbone rebuilt from backbone.pt (no download, no original file)."""
    try:
        description = runs.read_json(Path(path) / MODEL)["model"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{path / MODEL} is unreadable ({error})") from None
    return description, rebuild(description, load_saved(Path(path) / runs.BACKBONE))


@dataclass
class ProbeChoices:
    """What to probe and where (the `mim probe` options shared by runs and foreign models; None: the run's [probe])."""

    datasets: list[str] | None = None
    protocol: str | None = None
    layers: list[int] | None = None
    seeds: list[int] | None = None
    data_root: str | None = None
    device: str = "auto"
    show_progress: bool = True  # a live bar on a terminal; off: a line every N batches (logs)
    features: str | None = None  # standardized | raw (None: the run's probe.features)

    def run(self, path: Path, console: Console | None, **foreign: Any) -> ProbeResult:
        """run_probes on `path`; `foreign`: a foreign model's backbone_loader, identity, fixed_norm, preprocessing."""
        return run_probes(
            path,
            datasets=self.datasets,
            protocol=self.protocol,
            layers=self.layers,
            seeds=self.seeds,
            data_root=self.data_root,
            device=self.device,
            console=console,
            show_progress=self.show_progress,
            features=self.features,
            **foreign,
        )


def probe_model(
    model: str,
    choices: ProbeChoices,
    *,
    out: Path | None = None,
    options: ModelOptions | None = None,
    info: bool = False,
    console: Console | None = None,
) -> tuple[Path, ProbeResult]:
    """`mim probe MODEL`: a mim run directory as always; else a foreign model (or a probe directory written
    before) into its run-like directory. Returns the directory and its probe result."""
    options = options or ModelOptions()
    path = Path(model)
    given = [*options.given(), *(["--out"] if out else []), *(["--info"] if info else [])]
    if (path / runs.CONFIG).is_file() and not is_foreign_dir(path):  # a mim run
        if given:
            raise UsageError(f"{', '.join(given)}: for a model mim did not train, not a run directory")
        return path, choices.run(path, console)
    if path.is_dir():
        if not is_foreign_dir(path):
            raise UsageError(f"{model} is neither a run directory nor a probe directory (no {runs.CONFIG}, no {MODEL})")
        if [flag for flag in given if flag != "--info"]:
            raise UsageError(
                f"{model} already names its model ({MODEL}): {', '.join(given)} apply when probing a model source, "
                "not a probe directory"
            )
        description, module = read_model_dir(path)
    else:
        path, module = write_model_dir(model, out, choices.datasets, options)
        description = runs.read_json(path / MODEL)["model"]
    norm = description.get("normalization")
    result = choices.run(
        path,
        console,
        backbone_loader=lambda: module,
        identity=identity(runs.file_sha256(path / runs.BACKBONE), description),
        fixed_norm=(norm["mean"], norm["std"]) if norm else None,
        preprocessing=preprocessing(description),
    )
    if info:
        append_metrics(path, {"epoch": 0, KEY: information(path, module, choices.device)})
    return path, result


def information(path: Path, backbone: nn.Module, device: str = "auto") -> dict[str, Any]:
    """The information diagnostics (mimcli.train.diagnostics) of a foreign backbone on its directory's training data:
    the same evaluation batch, views and estimators as a mim run's, measured once."""
    config = runs.load_run_config(path)
    where = distributed.resolve_device(device)
    data = load_train_data(config)
    if not isinstance(data, ImageData):
        raise UsageError("--info needs the training images in memory: --set data.loader=memory")
    config = config.model_copy(update={"train": config.train.model_copy(update={"diagnostics_every": 1})})
    diagnostics = Diagnostics.build(config, data, BatchAugment(config.augment, config.data.image_size), where)
    if diagnostics is None:  # pragma: no cover - diagnostics_every is 1
        raise UsageError("information diagnostics are off")
    with torch.no_grad():
        measured = diagnostics.measure(backbone.to(where), 0)
    estimates: dict[str, Any] = measured[KEY]
    return estimates
