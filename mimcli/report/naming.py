"""Names: file names for figures (plots.py, information_plots.py) and the label of an untrained model."""

from __future__ import annotations

import re


def safe_name(text: str) -> str:
    """`text` as a file-name stem: runs of anything but letters, digits, '.', '_', '-' become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


RANDOM_INIT = "random init"  # the row of a run that trained no step (train.epochs = 0): the baseline of any training


def random_init_label(model_label: str, several: bool) -> str:
    """ "random init"; with several untrained rows in one table, which model each is: "random init (BYOL)"."""
    return f"{RANDOM_INIT} ({model_label})" if several else RANDOM_INIT
