"""Write resolved_presets.json: every named preset's fully resolved config, as `mim` builds it.

The JSON pins what each preset means, so that rewriting presets (one extending another with `base`)
is checked to change nothing: tests/config/test_config.py compares every preset against it. Regenerate it
only when a preset is meant to change, and say why in the commit:

    python tests/config/resolved_presets.py
"""

from __future__ import annotations

import json
from pathlib import Path

from mimcli.config import list_presets, load_config

FIXTURE = Path(__file__).with_suffix(".json")


def resolved() -> dict[str, object]:
    """Preset name -> its validated config as a plain dict (sorted by name)."""
    return {name: load_config(name).to_dict() for name in sorted(list_presets())}


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(resolved(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(resolved())} presets to {FIXTURE}")
