"""`mim sweep`: a grid of runs, each a normal run directory (see docs/sweeps.md).

plan.py makes the points, state.py says where each stands, execute.py runs them, output.py prints.
launch.py submits them to SLURM (or local processes) through submitit, jobs.py reads what was submitted
(`mim sweep status`), ddp.py trains a point on several GPUs inside its job.
"""

from mimcli.sweep.execute import run_point, run_sweep, sweep
from mimcli.sweep.plan import (
    KINDS,
    SweepPoint,
    parse_shard,
    plan_sweep,
    shard_points,
    split_values,
)
from mimcli.sweep.state import OutcomeStatus, PointOutcome, missing_probes, point_state

__all__ = [
    "KINDS",
    "OutcomeStatus",
    "PointOutcome",
    "SweepPoint",
    "missing_probes",
    "parse_shard",
    "plan_sweep",
    "point_state",
    "run_point",
    "run_sweep",
    "shard_points",
    "split_values",
    "sweep",
]
