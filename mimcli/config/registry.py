"""The method and regulariser registries, plugin loading, and the discriminated union built from them.

Why the registry lives here and is filled from the layers above: docs/extending.md.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ConfigDict, ValidationInfo, ValidatorFunctionWrapHandler

from mimcli.config.base import Section, own_keys
from mimcli.errors import UsageError

S = TypeVar("S", bound=Section)

BUILTIN_PLUGINS = ("mimcli.methods", "mimcli.regularizers")
ENTRY_POINT_GROUP = "mim.plugins"  # installed packages offer plugins under this group (by name or module)
READING = "mim_reading"  # validation context key: True when a record is read, not trained (no plugin import)
_loaded_plugins: dict[str, Any] = {}


@dataclass(frozen=True)
class Plugins:
    """What a command may do with `run.plugins` (docs/extending.md, "Which plugins mim imports").

    Readers (report, probe, a dry run, a resume's comparison) never import: `load=False`. Commands that
    train import files the user named on the command line (`named`), installed entry points, and a file
    named by a preset or a run's config.toml only with --trust-plugins (`trust`)."""

    load: bool = False
    named: frozenset[str] = frozenset()
    trust: bool = False


READ = Plugins()


def plugin_entry(entry: str) -> str:
    """A plugin as recorded: a .py file by absolute path, a module by its dotted name."""
    return str(Path(entry).resolve()) if entry.endswith(".py") else entry


def _entry_point_module(entry: str) -> str:
    """The module of the installed `mim.plugins` entry point named `entry` (by name or module): bare names
    are never looked up on sys.path, where the working directory of whoever reads a run sits."""
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry in (point.name, point.module):
            return point.module
    raise LookupError(f"not a .py file, and no installed package offers it as a {ENTRY_POINT_GROUP!r} entry point")


def load_plugin(entry: str) -> None:
    """Import a plugin once: a .py file by path, else an installed entry point; one UsageError line when it
    fails, whatever it raises (SystemExit included: a plugin must not end mim with its own exit status)."""
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
            _loaded_plugins[entry] = importlib.import_module(_entry_point_module(entry))
    except UsageError:
        _loaded_plugins.pop(entry, None)
        raise
    except (Exception, SystemExit) as error:  # a plugin's own bug, exit or a missing file: bad input, one line
        _loaded_plugins.pop(entry, None)
        raise UsageError(f"run.plugins: cannot load {entry}: {type(error).__name__}: {error}") from None


def load_builtins() -> None:
    """The built-in methods and regularisers, imported by module name (they register themselves)."""
    for entry in BUILTIN_PLUGINS:
        if entry not in _loaded_plugins:
            _loaded_plugins[entry] = importlib.import_module(entry)


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


class Unregistered:
    """Marks a section read from a record whose method or regulariser is not registered in this process
    (its plugin was not imported): its keys are kept as recorded, its label is its name."""


@functools.cache
def _unregistered_class(base: type[S], name: str, keys: tuple[str, ...]) -> type[S]:
    namespace: dict[str, Any] = {
        "model_config": ConfigDict(**{**base.model_config, "extra": "allow"}),
        "label": name,
        "uses": keys,
        "__module__": __name__,
    }
    if "min_batch" in dir(base):
        namespace["min_batch"] = 1  # unknown: a reader does not check the batch size of a recipe it cannot run
    return type(f"Unregistered{base.__name__}", (base, Unregistered), namespace)


def reading(info: ValidationInfo) -> bool:
    """True when the config is validated as a record to read (plugins not imported): see Plugins."""
    return bool(info.context and info.context.get(READING))


def pick_section(
    value: Any,
    registry: dict[str, type[S]],
    base: type[S],
    key: str,
    what: str,
    handler: ValidatorFunctionWrapHandler,
    read_only: bool = False,
) -> S:
    """The discriminated union on `key` (name / kind), assembled from the registry at validation time so that
    plugins registered after import are in it; a key of another section is an error that says whose it is.
    `read_only`: a name nobody registered is kept as an Unregistered section with its recorded keys."""
    if isinstance(value, base) and type(value) in registry.values():
        return value
    if isinstance(value, base):
        value = value.model_dump(by_alias=True, exclude_none=True)
    if not isinstance(value, dict):
        return handler(value)  # type: ignore[no-any-return]  # pydantic's own error for a non-table
    name = value.get(key, base.model_fields[key].default)
    if name not in registry and read_only and isinstance(name, str):
        keys = tuple(sorted(k for k in value if k != key))
        recorded: type[S] = _unregistered_class(base, name, keys)
        return recorded.model_validate(value)
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(registry)}")
    section = registry[name]
    for extra in sorted(set(value) - own_keys(section)):
        owners = sorted(other for other, cls in registry.items() if extra in own_keys(cls))
        if owners:
            raise ValueError(f"{extra!r} is a key of {what} {', '.join(owners)}, not of {what} {name!r}")
    return section.model_validate(value)
