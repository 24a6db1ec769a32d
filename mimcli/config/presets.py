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
from mimcli.config.registry import load_plugin
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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


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
    return key.split("."), value


SELECTORS = {"method": "name", "regularizer": "kind"}  # the key that picks each registered section's class


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Nested-dict update, in order; validation happens afterwards, so an unknown key is reported by name.

    Switching `method.name` (or `regularizer.kind`) to another registered choice first drops the section's
    keys the new one does not have, so a SimCLR recipe reruns as `supervised` without its temperature;
    keys both have (lambda from rc to lbe) and keys set after the switch stay, and are validated."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--set {text!r}: {part!r} is not a section")
            node = child
        if len(path) == 2 and SELECTORS.get(path[0]) == path[1] and node.get(path[1]) != value:
            _keep_own_keys(node, path[0], str(value))
        node[path[-1]] = value
    return raw


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
        shown = "" if item["type"] == "extra_forbidden" or isinstance(value, dict) else f" (got {value!r})"
        parts.append(f"{location}: {message}{shown}")
    return f"invalid config from {source}: " + "; ".join(parts)


def build_config(raw: dict[str, Any], source: str = "config", stored: bool = False) -> RunConfig:
    """Validate a raw config; plugins named in run.plugins register first. `stored`: a run's own config.toml,
    which older versions wrote with every method's keys (see drop_foreign_keys)."""
    run = raw.get("run")
    plugins = run.get("plugins", []) if isinstance(run, dict) else []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise UsageError(f"invalid config from {source}: run.plugins: must be a list of file paths or module names")
    for entry in plugins:
        load_plugin(entry)
    if stored:
        raw = drop_foreign_keys(raw)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        raise UsageError(format_validation_error(error, source)) from None


def load_config(preset: str | None, overrides: list[str] | None = None) -> RunConfig:
    """Preset (or defaults) + `--set` overrides -> validated RunConfig; the run name defaults to the preset's."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if preset:
        path = resolve_preset(preset)
        raw = read_toml(path)
        source = str(path)
        raw.setdefault("run", {}).setdefault("name", path.stem)
    raw = apply_overrides(raw, list(overrides or []))
    return build_config(raw, source + (" with --set overrides" if overrides else ""))


def to_toml(data: dict[str, Any]) -> str:
    """TOML text for a config dict, via tomli-w (the writer paired with tomllib: any string, multi-line
    descriptions included, reads back as written)."""
    import tomli_w

    return tomli_w.dumps(data)
