"""Shared fixtures: run the CLI in-process and capture its exit code and output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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


TINY = [
    "--set", "model.width=8", "--set", "data.dataset=shapes", "--set", "data.shapes.n_train=64",
    "--set", "data.shapes.n_test=32", "--set", "train.batch_size=32", "--set", "train.epochs=1",
    "--set", "train.precision=fp32",  # auto would pick bf16 on AMX/AVX512-BF16 CPUs only
    "--set", "probe.datasets=[]", "--no-progress",
]
