"""ResNet checkpoints written by other code bases, read safely and renamed to our backbone's keys.

Layouts (docs/probing.md, "Probing a model mim did not train"):

  mim          stem.0.weight, stem.1.*, layer1..4.*                       (PooledResNet itself)
  torchvision  conv1.weight, bn1.*, layer1..4.*, fc.*                     (torchvision's own .pth files)
  solo-learn   backbone.conv1.weight, ..., classifier.*, projector.*     (its Lightning .ckpt "state_dict";
               a CIFAR stem is 3x3, stride 1, padding 2, no max-pool)
  lightly      backbone.0.weight (conv1), backbone.1.* (bn1), backbone.4..7.* (layer1..4): the
               nn.Sequential(*list(resnet.children())[:-1]) its examples train
  infocl       encoder.conv1.weight, ..., encoder.layerN.0.shortcut.0 / shortcut_bn (CIFAR, STL) or
               ds_conv1 / ds_bn1 (ImageNet), projector.*: the official code's model.state_dict()

Everything is loaded with torch.load(weights_only=True): a file that needs pickle is refused with the
one-line recipe that converts it, because unpickling runs whatever code the file names.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mimcli.errors import UsageError

FORMATS = ("mim", "torchvision", "solo-learn", "lightly", "infocl")
# (block, blocks per stage) of every depth a ResNet checkpoint may have
DEPTHS: dict[str, tuple[str, list[int]]] = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]),
}
LIGHTLY_STAGES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
CONV1_PADDING = {"solo-learn": 2}  # a 3x3 first convolution's padding where it is not 1


def convert_hint(path: Path) -> str:
    """The one-line conversion recipe for a checkpoint that needs pickle."""
    return (
        f"if you trust it, convert it once: python -c \"import torch; c = torch.load('{path}', weights_only=False); "
        "torch.save(c.get('state_dict', c) if isinstance(c, dict) else c.state_dict(), 'weights.pt')\" "
        "and probe weights.pt"
    )


def load_tensors(path: Path) -> dict[str, Tensor]:
    """The state dict in `path` (a Lightning checkpoint's "state_dict", DataParallel's `module.` prefix
    removed), loaded with weights_only=True; a file that needs pickle or holds no tensors is refused."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"it holds a {found.group(1)} object" if found else "it holds Python objects, not only tensors"
        raise UsageError(
            f"{path} needs pickle to load ({what}), and unpickling can run code, so mim loads tensors only; "
            f"{convert_hint(path)}"
        ) from None
    except Exception as error:  # a torn, empty or non-torch file
        lines = str(error).strip().splitlines()
        raise UsageError(f"cannot load {path}: {lines[0] if lines else type(error).__name__}") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, Tensor) for v in data.values()):
        raise UsageError(f"{path} holds no state dict of tensors (a dict of name -> tensor)")
    state = {str(k): v for k, v in data.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def detect_format(state: dict[str, Tensor]) -> str | None:
    """The code base whose key layout `state` has, when the keys say so without doubt; else None."""
    keys = set(state)
    if "stem.0.weight" in keys and "layer1.0.conv1.weight" in keys:
        return "mim"
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        return "torchvision"
    if "backbone.conv1.weight" in keys and "classifier.weight" in keys:
        return "solo-learn"  # its online linear classifier sits beside every backbone
    if "backbone.0.weight" in keys and "backbone.4.0.conv1.weight" in keys:
        return "lightly"
    if "encoder.conv1.weight" in keys and any(".shortcut_bn." in k or ".ds_conv1." in k for k in keys):
        return "infocl"
    return None


def _infocl_key(key: str) -> str:
    key = key.replace(".shortcut.0.", ".downsample.0.").replace(".shortcut_bn.", ".downsample.1.")
    return key.replace(".ds_conv1.", ".downsample.0.").replace(".ds_bn1.", ".downsample.1.")


def to_torchvision(state: dict[str, Tensor], fmt: str) -> dict[str, Tensor]:
    """`state` (of layout `fmt`) as torchvision ResNet keys (conv1, bn1, layer1..4), heads dropped."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name: str | None = None
        if fmt == "mim":
            name = key.replace("stem.0.", "conv1.", 1).replace("stem.1.", "bn1.", 1) if key.startswith("stem.") else key
        elif fmt == "torchvision":
            name = key
        elif fmt == "solo-learn" and key.startswith("backbone."):
            name = key[len("backbone.") :]
        elif fmt == "lightly" and key.startswith("backbone."):
            index, _, rest = key[len("backbone.") :].partition(".")
            name = f"{LIGHTLY_STAGES[index]}.{rest}" if index in LIGHTLY_STAGES else None
        elif fmt == "infocl" and key.startswith("encoder."):
            name = _infocl_key(key[len("encoder.") :])
        if name is not None and name.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"):
            out[name] = value
    if "conv1.weight" not in out:
        prefix = {"solo-learn": "backbone.conv1", "lightly": "backbone.0", "infocl": "encoder.conv1"}.get(fmt, "conv1")
        raise UsageError(f"no {fmt} ResNet here: no key {prefix}.weight (first keys: {', '.join(list(state)[:3])})")
    return out


def infer_depth(state: dict[str, Tensor]) -> str:
    """resnet18/34/50/101/152 from torchvision-named keys: the block kind and the blocks per stage."""
    kind = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    counts = []
    for stage in range(1, 5):
        indices = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        counts.append(len(indices))
    for arch, (block, blocks) in DEPTHS.items():
        if (block, blocks) == (kind, counts):
            return arch
    raise UsageError(f"a ResNet with {kind} blocks {counts} per stage: mim knows {', '.join(DEPTHS)}")


def to_mim(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision ResNet keys -> PooledResNet keys (conv1 -> stem.0, bn1 -> stem.1)."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("conv1."):
            key = "stem.0." + key[len("conv1.") :]
        elif key.startswith("bn1."):
            key = "stem.1." + key[len("bn1.") :]
        renamed[key] = value
    return renamed


def describe_resnet(state: dict[str, Tensor], fmt: str) -> dict[str, Any]:
    """Depth, width and first-convolution kernel of a torchvision-named ResNet state dict."""
    conv1 = state["conv1.weight"]
    kernel = int(conv1.shape[-1])
    return {
        "arch": infer_depth(state),
        "width": int(conv1.shape[0]),
        "kernel": kernel,
        "conv1_padding": CONV1_PADDING.get(fmt, 1) if kernel == 3 else 3,
    }
