"""The training step never waits on the host: no tensor made from host data, no value read back, inside
an epoch. On a GPU each of these stalls the queue (a host copy waits for it to drain, a read waits for
the result); on the CPU they are cheap, so this test spies on the calls themselves."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from mimcli.config import load_config
from mimcli.data.shapes import generate_shapes
from mimcli.train.loop import build_trainer
from tests.tiny import TINY_KEYS

PACKAGE = str(Path(__file__).resolve().parents[2] / "mimcli")
READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


def spy(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str]]:
    """Count (file, call) for every host copy or read made directly by mimcli code."""
    calls: Counter[tuple[str, str]] = Counter()

    def record(name: str) -> None:
        caller = sys._getframe(2).f_code.co_filename
        if caller.startswith(PACKAGE):
            calls[(Path(caller).name, name)] += 1

    def wrap_factory(name: str, original: Any) -> Any:
        def factory(data: Any, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(data, torch.Tensor):  # as_tensor of a tensor on its device copies nothing
                record(name)
            return original(data, *args, **kwargs)

        return factory

    def wrap_read(name: str, original: Any) -> Any:
        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            record(name)
            return original(self, *args, **kwargs)

        return read

    for name in ("tensor", "as_tensor"):
        monkeypatch.setattr(torch, name, wrap_factory(name, getattr(torch, name)))
    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, wrap_read(name, getattr(torch.Tensor, name)))
    return calls


@pytest.mark.parametrize("kind", ["rc", "lbe"])  # each with SimCLR
def test_an_epoch_reads_back_once_at_its_end(monkeypatch, kind):
    config = load_config(
        None, [*TINY_KEYS, "train.batch_size=16", "train.epochs=3", f"regularizer.kind={kind!r}", "augment.hue=0.1"]
    )
    trainer = build_trainer(config, Path("/nonexistent"), data=generate_shapes(64, seed=0))
    trainer.train_epoch(None)  # the first epoch makes the augmentation's constants
    calls = spy(monkeypatch)
    result = trainer.train_epoch(None)
    monkeypatch.undo()
    assert result.images == 64  # four steps ran
    # the epoch's mean losses, read once after the last step; nothing inside the steps
    assert calls == Counter({("loop.py", "tolist"): 1})
