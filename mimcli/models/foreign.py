"""Backbones mim did not train (torchvision, timm, checkpoints of other code bases), as modules whose
forward returns pooled {"layer2", "layer3", "layer4"} features: the dict PooledResNet returns, so the
feature cache, the probes and the information diagnostics take them unchanged.

A model is described by a plain dict (`describe`), stored as model.json in its probe directory, and
rebuilt from that dict and the weights saved beside it (`rebuild`), so a probe directory is probed
again without the original file or a download. docs/probing.md, "Probing a model mim did not train".
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mimcli.errors import UsageError
from mimcli.models.checkpoints import (
    FORMATS,
    describe_resnet,
    detect_format,
    load_tensors,
    to_mim,
    to_torchvision,
)
from mimcli.models.resnet import PooledResNet, stem_for
from mimcli.rundir.runs import file_sha256

SLOTS = ("layer2", "layer3", "layer4")  # the three pooled outputs every probe backbone gives
POOLS = ("avg", "max", "token")
KINDS = ("torchvision", "timm")


def pool(output: Any, how: str) -> Tensor:
    """(B, C, H, W) -> (B, C) by `avg` or `max` over positions; (B, N, C) tokens -> (B, C) by `avg`,
    `max` or the first (`token`, a ViT's class token); (B, C) as it is."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, Tensor):
        raise UsageError(f"a feature layer returned {type(output).__name__}, not a tensor")
    if output.dim() == 2:
        return output
    if output.dim() == 4 and how in ("avg", "max"):
        return output.mean(dim=(2, 3)) if how == "avg" else output.amax(dim=(2, 3))
    if output.dim() == 3:
        if how == "token":
            return output[:, 0]
        return output.mean(dim=1) if how == "avg" else output.amax(dim=1)
    raise UsageError(f"--pool {how} does not apply to a feature layer output of shape {tuple(output.shape)}")


class TappedModel(nn.Module):
    """Any network: the outputs of three named modules (forward hooks), pooled, as layer2/3/4."""

    def __init__(self, model: nn.Module, modules: list[str], how: str = "avg") -> None:
        super().__init__()
        named = dict(model.named_modules())
        unknown = [name for name in modules if name not in named]
        if unknown or len(modules) != len(SLOTS):
            some = ", ".join(n for n in list(named)[1:8] if n)
            raise UsageError(
                f"--feature-layers takes three module names of the model ({', '.join(unknown) or modules} "
                f"unknown); its modules start {some}, ..."
            )
        if how not in POOLS:
            raise UsageError(f"--pool {how!r}: choose {', '.join(POOLS)}")
        self.model, self.how = model, how
        self.taps = dict(zip(SLOTS, modules))
        self._modules_by_slot = {slot: named[name] for slot, name in self.taps.items()}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs: dict[str, Any] = {}
        handles = [
            module.register_forward_hook(lambda _m, _i, out, slot=slot: outputs.__setitem__(slot, out))
            for slot, module in self._modules_by_slot.items()
        ]
        try:
            self.model(x)  # the whole forward: the head's output is dropped
        finally:
            for handle in handles:
                handle.remove()
        return {slot: torch.flatten(pool(outputs[slot], self.how), 1) for slot in SLOTS}


# ------------------------------------------------------------------------------------------ describe


def parse_source(source: str) -> tuple[str, str, str | None]:
    """'torchvision:resnet50:IMAGENET1K_V2' -> (kind, name, weights); a file -> ('checkpoint', path, None)."""
    kind, sep, rest = source.partition(":")
    if sep and kind in KINDS:
        name, _, weights = rest.partition(":")
        if not name:
            raise UsageError(f"{source!r}: name a model, e.g. {kind}:resnet50")
        return kind, name, weights or None
    if not Path(source).is_file():
        raise UsageError(
            f"{source!r} is not a run directory, a checkpoint file, torchvision:NAME[:WEIGHTS] "
            "or timm:NAME[:pretrained]"
        )
    return "checkpoint", str(Path(source).resolve()), None


def _torchvision(name: str, weights: str | None, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    from torchvision import models

    try:
        builder_weights = models.get_model_weights(name)
    except (ValueError, KeyError):
        raise UsageError(f"torchvision has no model {name!r} (torchvision.models.list_models())") from None
    torch.manual_seed(seed)
    model = models.get_model(name, weights=None)
    info: dict[str, Any] = {"weights": weights, "seed": None if weights else seed}
    if weights is None:
        return model, info
    members = list(builder_weights.__members__)
    if weights not in members:
        raise UsageError(f"torchvision {name} has no weights {weights!r}: choose {', '.join(members)}")
    enum = builder_weights[weights]
    try:
        state = enum.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # offline, a proxy, a torn download
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(
            f"torchvision weights {name}:{weights} are not in {cache} and could not be downloaded ({first}); "
            f"put {os.path.basename(enum.url)} there, or probe random weights with torchvision:{name}"
        ) from None
    model.load_state_dict(state)
    transforms = enum.transforms()
    info["input_size"] = int(transforms.crop_size[0])
    info["normalization"] = {"mean": list(transforms.mean), "std": list(transforms.std), "from": f"{enum}"}
    info["weights"] = enum.name  # DEFAULT -> the name it stands for
    return model, info


def _timm() -> Any:
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise UsageError(
            "timm:NAME needs timm: pip install timm (or pip install -e '.[timm]' in mim's checkout)"
        ) from None


def _timm_model(name: str, weights: str | None, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    timm = _timm()
    if weights not in (None, "pretrained"):
        raise UsageError(f"timm:{name}:{weights}: the third part is 'pretrained' or nothing (random weights)")
    torch.manual_seed(seed)
    try:
        model = timm.create_model(name, pretrained=weights == "pretrained")
    except Exception as error:  # unknown name, offline download
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(
            f"timm could not build {name!r}{' with pretrained weights' if weights else ''}: {first}"
        ) from None
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    info: dict[str, Any] = {"weights": weights, "seed": None if weights else seed, "pretrained_cfg": _plain(cfg)}
    if cfg.get("input_size"):
        info["input_size"] = int(cfg["input_size"][-1])
    if cfg.get("mean") and cfg.get("std"):
        info["normalization"] = {"mean": list(cfg["mean"]), "std": list(cfg["std"]), "from": "timm pretrained_cfg"}
    if getattr(model, "global_pool", None) == "token":
        info["pool"] = "token"
    feature_info = getattr(model, "feature_info", None) or []
    modules = [entry["module"] for entry in feature_info if isinstance(entry, dict) and "module" in entry]
    if len(modules) >= len(SLOTS):
        info["feature_layers"] = modules[-len(SLOTS) :]
    return model, info


def _plain(value: Any) -> Any:
    """A timm pretrained_cfg as JSON: tuples become lists, anything else odd its str."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def describe(
    source: str,
    *,
    fmt: str = "auto",
    stem: str = "auto",
    feature_layers: list[str] | None = None,
    pool_how: str | None = None,
    input_size: int | None = None,
    normalization: dict[str, Any] | None = None,
    seed: int = 0,
    default_input_size: int = 32,
) -> tuple[dict[str, Any], dict[str, Tensor], TappedModel]:
    """(model.json's description, the weights to save beside it, the probe backbone) of a model named by `source`.

    Every None falls back to what the model says (torchvision weights' transforms, timm's pretrained_cfg),
    else: feature layers layer2,layer3,layer4; avg pooling; `default_input_size`; normalisation None
    (mim's per-data-set rule, docs/probing.md)."""
    kind, name, weights = parse_source(source)
    info: dict[str, Any]
    if kind == "checkpoint":
        state, info = _checkpoint(Path(name), fmt, stem, input_size or default_input_size)
        default_layers = list(SLOTS)
        label = f"{info['checkpoint']['format']} {info['architecture']['arch']} ({Path(name).name})"
    else:
        if fmt != "auto":
            raise UsageError(f"--format is for checkpoint files, not {kind}:{name}")
        model, info = _torchvision(name, weights, seed) if kind == "torchvision" else _timm_model(name, weights, seed)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        named = dict(model.named_modules())
        default_layers = info.pop("feature_layers", None) or [s for s in SLOTS if s in named]
        label = f"{kind} {name} ({info['weights'] or 'random init'})"
    description: dict[str, Any] = {
        "source": source if kind != "checkpoint" else name,
        "kind": kind,
        "name": name,
        "label": label,
        **info,
        "feature_layers": feature_layers or default_layers,
        "pool": pool_how or info.get("pool") or "avg",
        "input_size": input_size or info.get("input_size") or default_input_size,
        "normalization": normalization or info.get("normalization"),
    }
    if len(description["feature_layers"]) != len(SLOTS):
        raise UsageError(f"{source} has no layer2/layer3/layer4: name three of its modules with --feature-layers A,B,C")
    # built here, before anything is written, so layers or weights that do not fit fail first
    return description, state, rebuild(description, state)


def _checkpoint(path: Path, fmt: str, stem: str, input_size: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
    raw = load_tensors(path)
    if fmt == "auto":
        found = detect_format(raw)
        if found is None:
            raise UsageError(
                f"cannot tell which code base wrote {path} (first keys: {', '.join(list(raw)[:4])}): "
                f"pass --format {'|'.join(FORMATS)}"
            )
        fmt = found
    elif fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose auto, {', '.join(FORMATS)}")
    resnet = to_torchvision(raw, fmt)
    architecture = describe_resnet(resnet, fmt)
    if architecture["kernel"] == 7:
        architecture["stem"] = "imagenet"
    else:
        chosen = stem_for(input_size, stem)
        if chosen == "imagenet":
            raise UsageError(f"{path} has a 3x3 first convolution: --stem cifar or stl, not imagenet")
        architecture["stem"] = chosen
    info = {
        "checkpoint": {"path": str(path), "sha256": file_sha256(path), "format": fmt},
        "architecture": architecture,
    }
    return to_mim(resnet), info


# ------------------------------------------------------------------------------------------ rebuild


def _bare_module(description: dict[str, Any]) -> nn.Module:
    kind, name = description["kind"], description["name"]
    if kind == "checkpoint":
        arch = description["architecture"]
        net = PooledResNet(arch["arch"], arch["width"], arch["stem"])
        conv = net.stem[0]
        if isinstance(conv, nn.Conv2d) and arch["kernel"] == 3:
            conv.padding = (arch["conv1_padding"], arch["conv1_padding"])
        return net
    if kind == "torchvision":
        from torchvision import models

        built: nn.Module = models.get_model(name, weights=None)
        return built
    if kind == "timm":
        module = _timm().create_model(name, pretrained=False)
        if not isinstance(module, nn.Module):
            raise UsageError(f"timm built no module for {name!r}")
        return module
    raise UsageError(f"model.json names an unknown kind {kind!r}")


def rebuild(description: dict[str, Any], state: dict[str, Tensor]) -> TappedModel:
    """The probe backbone a description names, with `state` loaded (strict: every key must fit)."""
    module = _bare_module(description)
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise UsageError(
            f"the weights do not fit {description['label']}: {lines[1] if len(lines) > 1 else lines[0]}"
        ) from None
    return TappedModel(module, list(description["feature_layers"]), description["pool"]).eval()


def load_saved(path: Path) -> dict[str, Tensor]:
    """The weights a probe directory holds (written by mim: tensors only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds no state dict")
    return state
