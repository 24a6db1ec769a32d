"""A finished run's trained backbone, rebuilt from its config.toml and backbone.pt.

Kept out of runs.py (run directories, JSON, config files) so that the report, which reads run
directories, never imports the model code; features and probes, which need the network, import this.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mimcli.config import RunConfig
from mimcli.errors import UsageError
from mimcli.models.resnet import PooledResNet, build_backbone
from mimcli.rundir.runs import BACKBONE, CONFIG, first_line, load_run_config


def load_backbone(run_dir: Path, weights: str = BACKBONE, map_location: str = "cpu") -> tuple[PooledResNet, RunConfig]:
    """The trained backbone of a run, in eval mode, plus its config. Loads tensors only (weights_only)."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    path = run_dir / weights
    if not path.is_file():
        raise UsageError(f"{path} not found: has the run finished?")
    backbone = build_backbone(config.model.backbone, config.model.width, config.data.image_size, config.model.stem)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a torn, empty or foreign file
        raise UsageError(f"cannot load {path}: {first_line(error)}") from None
    try:
        backbone.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:  # weights of another architecture or width
        detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), first_line(error))
        raise UsageError(
            f"cannot load {path}: it does not match {CONFIG} (model.backbone={config.model.backbone}, "
            f"model.width={config.model.width}): {detail}"
        ) from None
    return backbone.eval(), config
