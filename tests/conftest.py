"""Shared fixtures: run the CLI in-process and capture its exit code and output."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

SHARED = Path(__file__).resolve().parents[2] / "shared"
CIFAR_JPEG = SHARED / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture
def cli(monkeypatch, capsys):
    """cli("pretrain", "--preset", ...) -> (exit code, stdout, stderr)."""
    from mimcli.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["mim", *args])
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


# The smallest network and data set every CPU test trains on (`--set` keys). fp32: precision=auto would
# pick bf16 on AMX/AVX512-BF16 CPUs only, and a test's numbers must not depend on the CPU.
TINY_BASE = [
    "model.width=8",
    "data.dataset=shapes",
    "data.shapes.n_train=64",
    "data.shapes.n_test=32",
    "train.precision=fp32",
]
# One short training, no probes: what most tests run; a test file adds the keys it varies after these
# (a later --set of the same key wins).
TINY_KEYS = [*TINY_BASE, "train.batch_size=32", "train.epochs=1", "probe.datasets=[]"]
# The same as `mim` command-line options.
TINY = [*(arg for key in TINY_KEYS for arg in ("--set", key)), "--no-progress"]


def quiet(width: int = 1000) -> Console:
    """A console that records instead of printing (read it with console.file.getvalue()), wide enough
    that no line a test looks for is wrapped."""
    return Console(file=io.StringIO(), width=width)
