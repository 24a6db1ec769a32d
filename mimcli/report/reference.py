"""Reference numbers (the paper's tables) from the package data mimcli/reference/paper.json."""

from __future__ import annotations

import importlib.resources
import json
from typing import Any, cast

from mimcli.errors import UsageError
from mimcli.report.constants import COMPARE


def load_reference(name: str) -> dict[str, Any]:
    """One reference table of mimcli/reference/paper.json: 'paper' or 'report'."""
    if name not in COMPARE:
        raise UsageError(f"--compare {name!r}: choose one of {', '.join(COMPARE)}")
    text = (importlib.resources.files("mimcli") / "reference" / "paper.json").read_text()
    table: dict[str, Any] = json.loads(text)["tables"][name]
    return table


def reference_value(reference: dict[str, Any], source: str, model: str, dataset: str) -> float | None:
    return cast(float | None, reference.get("sources", {}).get(source, {}).get(model, {}).get(dataset))
