"""Planning a sweep: its points (one run directory each) from a kind, presets and values, and shards."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimcli.config import (
    READ,
    Plugins,
    RegularizerSection,
    RunConfig,
    check_folder_name,
    load_config,
    parse_override,
    regularizer_sections,
)
from mimcli.errors import UsageError
from mimcli.rundir.lock import lock_path

KINDS = ("lambda", "epochs", "seeds", "regularizers", "grid")
DEFAULT_REGULARIZERS = ("none", "rc", "lbe")
RANDOM_INIT = "random-init"  # --random-init points: the preset untrained, one per training seed
DEFAULT_LAMBDA: float = RegularizerSection.model_fields["lam"].default
SWEPT_KEYS = {  # keys a kind sets itself: a --set of one of them would silently undo the sweep
    "lambda": ("regularizer.lambda",),
    "epochs": ("train.epochs", "train.save_epochs"),
    "seeds": ("train.seed",),
    "regularizers": ("regularizer.kind",),
}


@dataclass
class SweepPoint:
    """One run of a sweep. `overrides` (the user's --set first, then the point's own) on `preset` give `config`."""

    name: str  # relative to sweep_dir: "simclr-rc/lambda-0.01", "seed-1", "epochs-100"
    preset: str
    overrides: list[str]
    run_dir: Path
    config: RunConfig
    sweep_dir: Path
    source: SweepPoint | None = None  # epochs sweep: the training run whose backbones/epoch-N.pt this point is
    epoch: int | None = None

    @property
    def lock_path(self) -> Path:
        return lock_path(self.run_dir)


def split_values(text: str) -> list[str]:
    """`0.1, 1` -> ["0.1", "1"]; commas inside [...], {...} or quotes do not split (`[2,3],[4]`)."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def _value_texts(values: str | Sequence[Any] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    texts: list[str] = []
    for value in values:
        texts.extend(split_values(value) if isinstance(value, str) else [str(value)])
    return texts


def _number(text: str, kind: str, cast: type) -> Any:
    try:
        value = cast(text)
    except ValueError:
        noun = "an integer" if cast is int else "a number"
        raise UsageError(f"{kind} sweep: {text!r} is not {noun}") from None
    if cast is float and not math.isfinite(value):  # nan, inf: a run that trains to NaN
        raise UsageError(f"{kind} sweep: {text!r} is not a finite number")
    return value


def _key(text: str) -> str:
    """The dotted key of an override, `lam` spelled `lambda`."""
    path, _ = parse_override(text)
    return ".".join("lambda" if part == "lam" else part for part in path)


def _safe(text: str) -> str:
    return re.sub(r"[^\w.+-]+", "-", text).strip("-") or "x"


def _stem(preset: str) -> str:
    return Path(preset).stem if preset.endswith(".toml") else preset


def unique(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _grid_axes(set_values: Sequence[str]) -> list[tuple[str, list[str]]]:
    axes: list[tuple[str, list[str]]] = []
    for text in set_values:
        key_text, sep, raw = text.partition("=")
        values = split_values(raw)
        if not sep or not values:
            raise UsageError(f"--set-values {text!r}: expected section.key=v1,v2,...")
        key = _key(f"{key_text}={values[0]}")
        if key in (k for k, _ in axes):
            raise UsageError(f"--set-values names {key} twice")
        axes.append((key, unique(values)))
    return axes


def _grid_points(axes: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    leaves = [key.rsplit(".", 1)[-1] for key, _ in axes]
    labels = [leaf if leaves.count(leaf) == 1 else key for leaf, (key, _) in zip(leaves, axes)]
    points = []
    for combo in itertools.product(*(values for _, values in axes)):
        name = "_".join(f"{label}-{_safe(value)}" for label, value in zip(labels, combo))
        points.append((name, [f"{key}={value}" for (key, _), value in zip(axes, combo)]))
    return points


def preset_lambda(preset: str, method: str, kind: str) -> float:
    """The lambda a regulariser gets in a regularizers sweep: that of preset `<preset>-<kind>` (e.g.
    quickstart-rc), else of `<method>-<kind>` (simclr-rc), else the default."""
    from mimcli.config import list_presets

    known = list_presets()
    for name in (f"{Path(preset).stem}-{kind}", f"{method}-{kind}"):
        if name in known:
            return load_config(name).regularizer.lam
    return DEFAULT_LAMBDA


def _point_overrides(
    kind: str, preset: str, base: RunConfig, texts: list[str], user_keys: set[str], axes: list[tuple[str, list[str]]]
) -> list[tuple[str, list[str]]]:
    """(label, the point's own overrides) for each point of one preset; epochs: the training run last."""
    if kind == "lambda":
        if base.regularizer.kind == "none":
            raise UsageError(
                f"preset {preset!r} has regularizer.kind='none': lambda changes nothing "
                f"(sweep a regularised preset, e.g. {base.method.name}-rc)"
            )
        return [
            (f"lambda-{lam:g}", [f"regularizer.lambda={lam!r}"])
            for lam in unique([_number(t, kind, float) for t in texts])
        ]
    if kind == "seeds":
        return [(f"seed-{s}", [f"train.seed={s}"]) for s in unique([_number(t, kind, int) for t in texts])]
    if kind == "grid":
        return _grid_points(axes)
    if kind == "regularizers":
        specs = []
        for reg in unique([t.strip("'\"") for t in texts]):
            if reg not in regularizer_sections():
                raise UsageError(
                    f"regularizers sweep: unknown regulariser {reg!r}; choose from {', '.join(regularizer_sections())}"
                )
            extra = [f"regularizer.kind={reg}"]
            if reg != "none" and "regularizer.lambda" not in user_keys:
                extra.append(f"regularizer.lambda={preset_lambda(preset, base.method.name, reg)!r}")
            specs.append((f"kind-{reg}", extra))
        return specs
    epochs = sorted(unique([_number(t, kind, int) for t in texts]))
    if epochs[0] < 1:
        raise UsageError(f"epochs sweep: {epochs[0]} is not a positive number of epochs")
    *smaller, last = epochs
    kept = ",".join(map(str, smaller))
    return [
        *((f"epochs-{e}", [f"train.epochs={e}"]) for e in smaller),
        (f"epochs-{last}", [f"train.epochs={last}", f"train.save_epochs=[{kept}]"]),
    ]


def _values_and_axes(
    kind: str, texts: list[str], set_values: Sequence[str] | None
) -> tuple[list[str], list[tuple[str, list[str]]], tuple[str, ...]]:
    """(the swept values, the grid's axes, the keys the sweep sets itself), checked against the kind."""
    if kind == "grid":
        if texts:
            raise UsageError("the grid sweep takes its values from --set-values section.key=v1,v2,...")
        axes = _grid_axes(set_values or [])
        if not axes:
            raise UsageError("the grid sweep needs at least one --set-values section.key=v1,v2,...")
        return texts, axes, tuple(key for key, _ in axes)
    if set_values:
        raise UsageError("--set-values is for the grid sweep; this sweep takes --values")
    if kind == "regularizers" and not texts:
        texts = list(DEFAULT_REGULARIZERS)
    if not texts:
        raise UsageError(f"the {kind} sweep needs --values, e.g. {'0.01,0.1,1' if kind == 'lambda' else '1,2,3'}")
    return texts, [], SWEPT_KEYS[kind]


def _sweep_dir(kind: str, presets: list[str], out_root: str | Path, name: str | None) -> Path:
    if name is not None:
        try:
            check_folder_name(name)
        except ValueError as error:
            raise UsageError(f"--name {name!r}: {error}") from None
    return Path(out_root) / (name or f"{kind}-{'+'.join(_stem(p) for p in presets)}")


def random_init_overrides(seed: int) -> list[str]:
    """A random-init point's own overrides: no training (epochs 0 saves the initial backbone), this seed."""
    return ["train.epochs=0", "train.save_epochs=[]", f"train.seed={seed}"]


def plan_sweep(
    kind: str,
    presets: str | Sequence[str],
    values: str | Sequence[Any] | None = None,
    overrides: Sequence[str] | None = None,
    set_values: Sequence[str] | None = None,
    out_root: str | Path = "runs",
    name: str | None = None,
    plugins: Plugins = READ,
    random_init: bool = False,
) -> list[SweepPoint]:
    """The points of a sweep, every config built and validated (nothing is written); plugins are imported
    only as `plugins` allows (a dry run reads: READ).

    values: the swept values (strings may be comma-separated); regularizers defaults to none,rc,lbe.
    overrides: `section.key=value` applied to every point. set_values: the grid's `section.key=v1,v2` axes.
    random_init: also, per preset, one untrained point (RANDOM_INIT-seed-S) per training seed of its points.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown sweep kind {kind!r}; choose one of {', '.join(KINDS)}")
    presets = unique([presets] if isinstance(presets, str) else list(presets))
    if not presets:
        raise UsageError("a sweep needs at least one --preset")
    user = list(overrides or [])
    user_keys = {_key(text) for text in user}
    texts, axes, swept = _values_and_axes(kind, _value_texts(values), set_values)
    clash = sorted(user_keys.intersection(swept))
    if clash:
        raise UsageError(f"--set {clash[0]} clashes with the {kind} sweep, which sets it per point")

    sweep_dir = _sweep_dir(kind, presets, out_root, name)
    prefix = len(presets) > 1 or kind == "lambda"

    def point(preset: str, label: str, extra: list[str]) -> SweepPoint:
        point_name = f"{_stem(preset)}/{label}" if prefix else label
        config = load_config(preset, [*user, *extra], plugins)
        return SweepPoint(point_name, preset, [*user, *extra], sweep_dir / point_name, config, sweep_dir)

    points: list[SweepPoint] = []
    for preset in presets:
        base = load_config(preset, user, plugins)
        made = [
            point(preset, label, extra) for label, extra in _point_overrides(kind, preset, base, texts, user_keys, axes)
        ]
        if kind == "epochs":  # the last point is the one training; the others are read from its backbones
            for derived in made[:-1]:
                derived.source, derived.epoch = made[-1], derived.config.train.epochs
        if random_init:
            seeds = unique([p.config.train.seed for p in made])
            made += [point(preset, f"{RANDOM_INIT}-seed-{s}", random_init_overrides(s)) for s in seeds]
        points += made
    names = [p.name for p in points]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UsageError(f"two points of the sweep would share the directory {duplicate!r}")
    return points


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` (1-based) -> (I, N)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 1/4")
    return check_shard((int(match[1]), int(match[2])))


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    index, count = shard
    if count < 1 or not 1 <= index <= count:
        raise UsageError(f"--shard {index}/{count}: need 1 <= I <= N")
    return index, count


def shard_points(points: list[SweepPoint], shard: tuple[int, int] | str | None) -> list[SweepPoint]:
    """Points i (0-based) with i % N == I - 1: shards 1/N .. N/N cover the sweep exactly once."""
    if shard is None:
        return list(points)
    index, count = parse_shard(shard) if isinstance(shard, str) else check_shard(shard)
    return [p for i, p in enumerate(points) if i % count == index - 1]
