"""Experiment trackers beside metrics.jsonl (`train.log`): TensorBoard, as an optional extra.

metrics.jsonl (written by the training loop, one line per epoch) stays the source of truth that
resume, `mim report` and the docs read; a sink only mirrors numbers into a tracker: per-step loss
terms, lr and images/s at each log point, and every per-epoch record (diagnostics included).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mimcli.errors import UsageError

TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_HINT = (
    "train.log includes 'tensorboard', which needs the tensorboard package: pip install 'tensorboard>=2.14'"
)


class Sink:
    """Does nothing; a tracker overrides what it records."""

    def step(self, global_step: int, values: dict[str, float]) -> None:
        """Values at a log point inside an epoch (loss terms so far, lr, images/s)."""

    def epoch(self, global_step: int, record: dict[str, Any]) -> None:
        """One metrics.jsonl record (numbers only are mirrored), at the step that ends its epoch."""

    def close(self) -> None:
        """Flush and release files."""


class TensorBoardSink(Sink):
    """Scalars under runs/<name>/tensorboard: `step/<term>` per log point, `epoch/<key>` per epoch, both
    against the global optimiser step (so a resume can purge what a crash left past its checkpoint)."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError(TENSORBOARD_HINT) from None
        # purge_step: on --resume, events past the checkpoint (written before a crash) are dropped
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge_step)

    def step(self, global_step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"step/{name}", value, global_step)

    def epoch(self, global_step: int, record: dict[str, Any]) -> None:
        for name, value in record.items():
            # nested groups (the information-plane diagnostics under "info") become info/<key>
            values = (
                {f"{name}/{key}": v for key, v in value.items()}
                if isinstance(value, dict)
                else {f"epoch/{name}": value}
            )
            for tag, number in values.items():
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    self.writer.add_scalar(tag, number, global_step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_sinks(names: Sequence[str], run_dir: Path, purge_step: int | None = None) -> list[Sink]:
    """The trackers named in train.log besides 'jsonl' (always written)."""
    sinks: list[Sink] = []
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            sinks.append(TensorBoardSink(run_dir, purge_step))
    return sinks
