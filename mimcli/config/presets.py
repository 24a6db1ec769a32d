"""From a preset name or file and `--set` overrides to a validated RunConfig, and back to TOML."""

from __future__ import annotations

import ast
import importlib.util
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mimcli.config.base import own_keys
from mimcli.config.registry import READ, READING, Plugins, load_plugin, plugin_entry
from mimcli.config.sections import RunConfig, drop_foreign_keys, method_sections, regularizer_sections
from mimcli.errors import UsageError


def preset_dirs() -> list[Path]:
    """Where named presets live: the checkout's presets/ first, then the installed package data."""
    dirs = [Path(__file__).resolve().parents[2] / "presets"]
    try:  # installed: mimcli.presets is a data-only (namespace) package; take every folder it spans
        spec = importlib.util.find_spec("mimcli.presets")
        dirs += [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    except ModuleNotFoundError:
        pass
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def list_presets() -> dict[str, Path]:
    """Preset name -> file, first directory wins."""
    found: dict[str, Path] = {}
    for directory in preset_dirs():
        for path in sorted(directory.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def looks_like_path(name: str) -> bool:
    """A preset argument names a file when it ends in .toml or holds a path separator; anything else is a
    preset name, whatever files or folders the working directory holds (`--out shapes-study` must not
    shadow the shapes-study preset)."""
    return name.endswith(".toml") or "/" in name or (os.sep != "/" and os.sep in name)


def resolve_preset(name_or_path: str) -> Path:
    """A preset name (`simclr-rc`) or a path to a TOML file (`my.toml`, `configs/base`)."""
    if looks_like_path(name_or_path):
        candidate = Path(name_or_path).expanduser()
        if not candidate.is_file():
            raise UsageError(f"preset file not found: {candidate}")
        return candidate
    presets = list_presets()
    if name_or_path not in presets:
        hint = " (a file is read when the name ends in .toml or contains a /)" if Path(name_or_path).is_file() else ""
        raise UsageError(
            f"unknown preset {name_or_path!r}{hint}; known presets: {', '.join(sorted(presets)) or 'none'}"
        )
    return presets[name_or_path]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (ValueError, RecursionError, MemoryError) as error:  # TOML, UTF-8, an integer or nesting too large
        raise UsageError(f"cannot read {path}: {error or type(error).__name__}") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


BASE = "base"  # top-level key of a preset naming the preset (or TOML file) it extends


def read_preset(path: Path) -> dict[str, Any]:
    """A preset file as one raw config: its `base` chain read first, then this file's keys merged over it.

    `base = "simclr-rc"` (a preset name, or a TOML file: a relative path is the file's neighbour) makes a
    preset "that one, except": sections merge key by key, any other value (a list included) is replaced.
    Switching `method.name` or `regularizer.kind` drops the base's keys the new choice lacks, as `--set`
    does. The run name is never inherited (a preset's name is its file's). docs/extending.md, "A preset that
    extends another"."""
    return _read_chain(path, [])


def _read_chain(path: Path, seen: list[Path]) -> dict[str, Any]:
    here = path.resolve()
    if here in seen:
        chain = " -> ".join(str(p) for p in [*seen, here])
        raise UsageError(f"preset {seen[0]}: its base chain returns to {here} ({chain})")
    raw = anchor_plugins(read_toml(path), path.parent)
    if BASE not in raw:
        return raw
    base = raw.pop(BASE)
    if not isinstance(base, str) or not base:
        raise UsageError(f"invalid config from {path}: base: must be a preset name or a .toml file (got {base!r})")
    try:
        base_path = resolve_preset(str(path.parent / base) if looks_like_path(base) else base)
    except UsageError as error:
        raise UsageError(f"{path}: base: {error}") from None
    inherited = _read_chain(base_path, [*seen, here])
    run = inherited.get("run")
    if isinstance(run, dict):
        run.pop("name", None)
    return merge_sections(inherited, raw)


def merge_sections(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """`own` over `base`: nested tables merge key by key, other values are replaced; a switched method or
    regulariser (another `name` / `kind`) first loses the base's keys the new choice does not have."""
    merged = dict(base)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            inherited = dict(merged[key])
            selector = SELECTORS.get(key)
            if selector in value and inherited.get(selector) != value[selector]:
                _keep_own_keys(inherited, key, str(value[selector]))
            merged[key] = merge_sections(inherited, value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value); the value is parsed as TOML, else kept as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or "." not in key:
        raise UsageError(f"--set {text!r}: expected section.key=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        except (RecursionError, MemoryError) as error:
            raise _unreadable(key, raw, error) from None
    except (ValueError, RecursionError, MemoryError) as error:  # more digits than int() reads; nesting too deep
        raise _unreadable(key, raw, error) from None
    return key.split("."), value


def _unreadable(key: str, raw: str, error: BaseException) -> UsageError:
    shown = raw if len(raw) <= 40 else f"{raw[:20]}...{raw[-10:]} ({len(raw)} characters)"
    reason = str(error).split(":")[0] or type(error).__name__
    return UsageError(f"--set {key}={shown}: cannot read the value ({reason})")


SELECTORS = {"method": "name", "regularizer": "kind"}  # the key that picks each registered section's class


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Nested-dict update, in order; validation happens afterwards, so an unknown key is reported by name.

    Switching `method.name` (or `regularizer.kind`) to another registered choice first drops the section's
    keys the new one does not have, so a SimCLR recipe reruns as `supervised` without its temperature;
    keys both have (lambda from rc to lbe) and keys set after the switch stay, and are validated.

    Switching `data.dataset` to `imagefolder` without setting `probe.datasets` also replaces the preset's
    probe list (written for its own data set, and mostly downloads) by the folder's own test split."""
    dataset_before = raw.get("data", {}).get("dataset") if isinstance(raw.get("data"), dict) else None
    probes_set = False
    for text in overrides:
        path, value = parse_override(text)
        probes_set = probes_set or path == ["probe", "datasets"]
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--set {text!r}: {part!r} is not a section")
            node = child
        if len(path) == 2 and SELECTORS.get(path[0]) == path[1] and node.get(path[1]) != value:
            _keep_own_keys(node, path[0], str(value))
        node[path[-1]] = value
    if not probes_set:
        _probe_own_folder(raw, dataset_before)
    return raw


def _probe_own_folder(raw: dict[str, Any], dataset_before: Any) -> None:
    """A run switched to the user's own image folder probes that folder's test/ (or val/) split, if it has
    one, and nothing else unless probe.datasets asks: not the preset's seven downloaded data sets."""
    data = raw.get("data")
    if not isinstance(data, dict) or data.get("dataset") != "imagefolder" or dataset_before == "imagefolder":
        return
    root = Path(str(data.get("root", "data"))).expanduser()
    own = [f"imagefolder:{data.get('root', 'data')}"] if (root / "test").is_dir() or (root / "val").is_dir() else []
    probe = raw.setdefault("probe", {})
    if isinstance(probe, dict):
        probe["datasets"] = own


def _keep_own_keys(values: dict[str, Any], section: str, choice: str) -> None:
    """Drop the keys of `values` that `choice`'s section lacks (unregistered choices: left for validation)."""
    registry = dict(method_sections() if section == "method" else regularizer_sections())
    if choice in registry:
        own = own_keys(registry[choice])
        for key in [key for key in values if key not in own]:
            del values[key]


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line naming each offending key and value."""
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"] if p != "__root__") or "config"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        value = item.get("input")
        text = repr(value) if len(repr(value)) <= 60 else f"{repr(value)[:40]}... ({len(repr(value))} characters)"
        shown = "" if item["type"] == "extra_forbidden" or isinstance(value, dict) else f" (got {text})"
        parts.append(f"{location}: {message}{shown}")
    return f"invalid config from {source}: " + "; ".join(parts)


def anchor_plugins(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A relative plugin file named in a preset or a run's config.toml is that file's neighbour: resolve it
    against the file's own folder, never against the working directory of whoever reads it."""
    run = raw.get("run")
    plugins = run.get("plugins") if isinstance(run, dict) else None
    if isinstance(run, dict) and isinstance(plugins, list):
        run["plugins"] = [
            os.path.join(folder, entry) if isinstance(entry, str) and entry.endswith(".py") else entry
            for entry in plugins
        ]
    return raw


def _plugin_entries(raw: dict[str, Any], source: str) -> list[str]:
    run = raw.get("run")
    plugins = run.get("plugins", []) if isinstance(run, dict) else []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise UsageError(f"invalid config from {source}: run.plugins: must be a list of file paths or module names")
    return [plugin_entry(entry) for entry in plugins]


def training_plugins(overrides: list[str] | None, trust: bool) -> Plugins:
    """The Plugins of a command that trains: the files named by its own `--set run.plugins=...` are the
    user's choice; files named by a preset or a run's config.toml also need `trust` (--trust-plugins)."""
    named = _plugin_entries(apply_overrides({}, list(overrides or [])), "--set")
    return Plugins(load=True, named=frozenset(named), trust=trust)


def _validate(raw: dict[str, Any], source: str, read_only: bool) -> RunConfig:
    try:
        return RunConfig.model_validate(raw, context={READING: read_only})
    except ValidationError as error:
        raise UsageError(format_validation_error(error, source)) from None


def build_config(
    raw: dict[str, Any], source: str = "config", stored: bool = False, plugins: Plugins = READ
) -> RunConfig:
    """Validate a raw config. `stored`: a run's own config.toml, which older versions wrote with every
    method's keys (see drop_foreign_keys). `plugins`: READ validates without importing any plugin (a method
    nobody registered keeps its recorded keys); a training command's Plugins first validates the rest,
    then imports the plugins it may (docs/extending.md), then validates their sections too."""
    entries = _plugin_entries(raw, source)
    if stored:
        raw = drop_foreign_keys(raw)
    config = _validate(raw, source, read_only=True)  # every other mistake is reported before any import
    if not plugins.load:
        return config
    untrusted = [entry for entry in entries if entry.endswith(".py") and entry not in plugins.named]
    if untrusted and not plugins.trust:
        raise UsageError(
            f"{source} names run.plugins {', '.join(untrusted)}: mim imports a plugin file named in a preset or "
            "a run's config.toml only with --trust-plugins (read it first: it runs as you)"
        )
    for entry in entries:
        load_plugin(entry)
    if stored:
        raw = drop_foreign_keys(raw)
    return _validate(raw, source, read_only=False)


def load_config(preset: str | None, overrides: list[str] | None = None, plugins: Plugins = READ) -> RunConfig:
    """Preset (or defaults) + `--set` overrides -> validated RunConfig; the run name defaults to the preset's.
    Plugins are imported only as `plugins` allows (READ: never)."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if preset:
        path = resolve_preset(preset)
        raw = read_preset(path)
        source = str(path)
        raw.setdefault("run", {}).setdefault("name", path.stem)
    raw = apply_overrides(raw, list(overrides or []))
    return build_config(raw, source + (" with --set overrides" if overrides else ""), plugins=plugins)


def to_toml(data: dict[str, Any]) -> str:
    """TOML text for a config dict, via tomli-w (the writer paired with tomllib: any string, multi-line
    descriptions included, reads back as written)."""
    import tomli_w

    return tomli_w.dumps(data)
