"""A sweep point on several GPUs: its training under torchrun, as `mim pretrain --gpus N` trains a run.

The process running the point (a launcher's array task) keeps the point's lock and probes the point when
the workers are done, on the features they cached; each torchrun worker runs `main` here: DDP training,
then its share of the probe features, exactly what `mim pretrain` does under torchrun.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from mimcli import distributed
from mimcli.config import load_config
from mimcli.probe import extract_features_distributed
from mimcli.sweep.plan import SweepPoint
from mimcli.train.loop import pretrain


def ddp_command(point: SweepPoint, resume: bool, gpus: int) -> list[str]:
    spec = {"preset": point.preset, "overrides": point.overrides, "run_dir": str(point.run_dir), "resume": resume}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)]
    return [*launcher, "-m", "mimcli.sweep.ddp", json.dumps(spec)]


def train_ddp(point: SweepPoint, resume: bool, gpus: int, console: Console) -> None:
    """Train (or resume) the point on `gpus` torchrun workers; stop them if this process is stopped."""
    command = ddp_command(point, resume, gpus)
    console.print(f"{point.name}: {shlex.join(command)}", markup=False, highlight=False)
    process = subprocess.Popen(command)
    try:
        code = process.wait()
    finally:
        if process.poll() is None:  # this task was told to stop (time limit, pre-emption): so are the workers
            process.terminate()  # torchrun passes SIGTERM on to its workers
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if code != 0:
        raise RuntimeError(f"{point.name}: the {gpus} torchrun workers exited with status {code}")


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    config = load_config(spec["preset"], spec["overrides"])
    run_dir = Path(spec["run_dir"])
    console = Console()
    with distributed.process_group(config.train.device):
        pretrain(config, run_dir, resume=bool(spec["resume"]), console=console, show_progress=False)
        if config.probe.datasets and distributed.is_distributed():
            extract_features_distributed(run_dir, config, console)


if __name__ == "__main__":
    main(sys.argv[1:])
