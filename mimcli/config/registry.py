"""The method and regulariser registries, plugin loading, and the discriminated union built from them.

Why the registry lives here and is filled from the layers above: docs/extending.md.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidatorFunctionWrapHandler

from mimcli.config.base import Section, own_keys
from mimcli.errors import UsageError

S = TypeVar("S", bound=Section)

BUILTIN_PLUGINS = ("mimcli.methods", "mimcli.regularizers")
_loaded_plugins: dict[str, Any] = {}


def plugin_entry(entry: str) -> str:
    """A plugin as recorded: a .py file by absolute path, a module by its dotted name."""
    return str(Path(entry).resolve()) if entry.endswith(".py") else entry


def load_plugin(entry: str) -> None:
    """Import a plugin once: a .py file by path, else a module by name; one UsageError line when it fails."""
    entry = plugin_entry(entry)
    if entry in _loaded_plugins:
        return
    try:
        if entry.endswith(".py"):
            path = Path(entry)
            if not path.is_file():
                raise FileNotFoundError(f"no such file {entry}")
            name = f"mim_plugin_{path.stem}_{hashlib.sha1(entry.encode()).hexdigest()[:8]}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"not a Python module: {entry}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            _loaded_plugins[entry] = module
            spec.loader.exec_module(module)
        else:
            _loaded_plugins[entry] = importlib.import_module(entry)
    except UsageError:
        _loaded_plugins.pop(entry, None)
        raise
    except Exception as error:  # a plugin's own bug or a missing file: bad input, one line
        _loaded_plugins.pop(entry, None)
        raise UsageError(f"run.plugins: cannot load {entry}: {type(error).__name__}: {error}") from None


def load_builtins() -> None:
    """The built-in methods and regularisers, loaded by name like any plugin (they register themselves)."""
    for entry in BUILTIN_PLUGINS:
        load_plugin(entry)


def register_section(registry: dict[str, type[S]], key: str, section: type[S], owner: str) -> str:
    """Add a section under the default of its `key` field; two owners of one name are an error."""
    name = section.model_fields[key].default
    if not isinstance(name, str) or not name:
        raise TypeError(f"{section.__name__}.{key} needs a default: the name it registers under")
    known = registry.get(name)
    if known is not None and known is not section:
        raise UsageError(f"{owner} {name!r} is already registered (by {known.__module__}.{known.__qualname__})")
    registry[name] = section
    return name


def pick_section(
    value: Any,
    registry: dict[str, type[S]],
    base: type[S],
    key: str,
    what: str,
    handler: ValidatorFunctionWrapHandler,
) -> S:
    """The discriminated union on `key` (name / kind), assembled from the registry at validation time so that
    plugins registered after import are in it; a key of another section is an error that says whose it is."""
    if isinstance(value, base) and type(value) in registry.values():
        return value
    if isinstance(value, base):
        value = value.model_dump(by_alias=True, exclude_none=True)
    if not isinstance(value, dict):
        return handler(value)  # type: ignore[no-any-return]  # pydantic's own error for a non-table
    name = value.get(key, base.model_fields[key].default)
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(registry)}")
    section = registry[name]
    for extra in sorted(set(value) - own_keys(section)):
        owners = sorted(other for other, cls in registry.items() if extra in own_keys(cls))
        if owners:
            raise ValueError(f"{extra!r} is a key of {what} {', '.join(owners)}, not of {what} {name!r}")
    return section.model_validate(value)
