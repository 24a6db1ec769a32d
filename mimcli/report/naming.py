"""File names for figures, shared by plots.py and information_plots.py (which plots.py calls)."""

from __future__ import annotations

import re


def safe_name(text: str) -> str:
    """`text` as a file-name stem: runs of anything but letters, digits, '.', '_', '-' become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"
