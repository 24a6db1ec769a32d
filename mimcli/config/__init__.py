"""Typed run configuration: pydantic sections (one per method and regulariser, registered), presets and
`--set` overrides. One job per module:

- base.py: the base of every section
- registry.py: plugins (`run.plugins`, and the built-ins loaded the same way), registration, and the
  discriminated union over registered sections
- sections.py: the sections of a run (with the bases each method / regulariser section subclasses, and
  their registries) and RunConfig
- presets.py: preset lookup, TOML, `--set` overrides, validation with one-line errors
"""

from __future__ import annotations

from mimcli.config.base import (
    Section,
    check_folder_name,
    own_keys,
)
from mimcli.config.presets import (
    anchor_plugins,
    apply_overrides,
    build_config,
    format_validation_error,
    list_presets,
    load_config,
    parse_override,
    preset_dirs,
    read_preset,
    read_toml,
    resolve_preset,
    to_toml,
    training_plugins,
)
from mimcli.config.registry import (
    BUILTIN_PLUGINS,
    READ,
    Plugins,
    Unregistered,
    load_builtins,
    load_plugin,
    pick_section,
    plugin_entry,
    register_section,
)
from mimcli.config.sections import (
    DEFAULT_METHOD,
    DEFAULT_REGULARIZER,
    IMAGENET_SIZE,
    METHOD_SECTIONS,
    REGULARIZER_SECTIONS,
    AugmentSection,
    DataSection,
    MethodSection,
    ModelSection,
    ProbeSection,
    RegularizerSection,
    RunConfig,
    RunSection,
    ShapesSection,
    TrainSection,
    drop_foreign_keys,
    method_section,
    method_sections,
    regularizer_section,
    regularizer_sections,
)

__all__ = [
    "BUILTIN_PLUGINS",
    "DEFAULT_METHOD",
    "DEFAULT_REGULARIZER",
    "IMAGENET_SIZE",
    "METHOD_SECTIONS",
    "READ",
    "REGULARIZER_SECTIONS",
    "AugmentSection",
    "DataSection",
    "MethodSection",
    "ModelSection",
    "Plugins",
    "ProbeSection",
    "RegularizerSection",
    "RunConfig",
    "RunSection",
    "Section",
    "ShapesSection",
    "TrainSection",
    "Unregistered",
    "anchor_plugins",
    "apply_overrides",
    "build_config",
    "check_folder_name",
    "drop_foreign_keys",
    "format_validation_error",
    "list_presets",
    "load_builtins",
    "load_config",
    "load_plugin",
    "method_section",
    "method_sections",
    "own_keys",
    "parse_override",
    "pick_section",
    "plugin_entry",
    "preset_dirs",
    "read_preset",
    "read_toml",
    "register_section",
    "regularizer_section",
    "regularizer_sections",
    "resolve_preset",
    "to_toml",
    "training_plugins",
]
