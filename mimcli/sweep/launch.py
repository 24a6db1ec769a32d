"""`mim sweep ... --launcher slurm|local`: the sweep's unfinished points as one submitit job array.

Each array task runs `run_point`, the code a local sweep runs for a point (same run directory, lock,
probes and files). A task stopped by its time limit or pre-empted gets submitit's signal (USR2); submitit
then calls `PointTask.checkpoint`, which resubmits the same task, and requeues it: the task finds the run's
checkpoint.pt and resumes it the way `mim pretrain --resume` does. submitit is an optional extra
(`pip install -e '.[slurm]'` from the checkout, or `pip install submitit`); it is imported only here,
and only when a launcher is asked for.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from mimcli.errors import UsageError
from mimcli.rundir import provenance
from mimcli.sweep.jobs import jobs_dir, latest_jobs, point_status, read_jobs, record_jobs, slurm_states
from mimcli.sweep.plan import SweepPoint, unique
from mimcli.sweep.state import check_conflicts, point_state

if TYPE_CHECKING:
    import submitit

LAUNCHERS = ("slurm", "local")
INSTALL_HINT = "--launcher needs submitit: pip install submitit (or pip install -e '.[slurm]' in mim's checkout)"


@dataclass
class LaunchOptions:
    """What each array task asks the scheduler for (sbatch's own names in the comments)."""

    launcher: str
    partition: str | None = None  # --partition
    account: str | None = None  # --account
    gpus: int = 0  # --gpus-per-node; more than 1: the point trains with DDP inside its task
    cpus: int | None = None  # --cpus-per-task
    mem: str | None = None  # --mem, e.g. 64G
    time_min: int = 24 * 60  # --time; submitit signals the task signal_delay_s before it
    sbatch: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, passed through as written
    requeues: int = 3  # how many time-outs a task may be requeued after (pre-emptions do not count)
    signal_delay_s: int = 120  # USR2 this long before the time limit: time to leave the epoch cleanly
    array_parallelism: int = 256  # tasks running at once (--array=0-N%P)


def parse_time(text: str) -> int:
    """sbatch's --time forms -> whole minutes (seconds round up): M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+){0,2})", text.strip())
    if not match:
        raise UsageError(f"--time {text!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    parts = [int(x) for x in match[2].split(":")]
    if match[1] is not None:  # D-H, D-H:M, D-H:M:S
        parts = [int(match[1]) * 24 + parts[0], *parts[1:]] + [0] * (3 - len(parts))
    elif len(parts) < 3:  # M or M:S
        parts = [0, *parts, 0][:3] if len(parts) == 1 else [0, *parts]
    hours, minutes, seconds = parts
    total = hours * 60 + minutes + (1 if seconds else 0)
    if total < 1:
        raise UsageError(f"--time {text!r}: at least one minute")
    return total


def parse_sbatch(items: Sequence[str]) -> dict[str, Any]:
    """`--sbatch qos=high --sbatch exclusive` -> {"qos": "high", "exclusive": True}."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.lstrip("-").partition("=")
        if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_-]*", key):
            raise UsageError(f"--sbatch {item!r}: expected an sbatch option as name=value (or a bare flag name)")
        options[key.replace("_", "-")] = value if sep else True
    return options


def require_submitit() -> Any:
    try:
        import submitit
    except ModuleNotFoundError as error:
        if error.name != "submitit":
            raise
        raise UsageError(INSTALL_HINT) from None
    return submitit


# ------------------------------------------------------------------------------------------- the task


class PointTask:
    """One array task: bring its points to finished, in order, exactly as a local sweep does.

    Several points share a task only in the epochs sweep (its training run first, then the points read
    from that run's backbones). Picklable: submitit sends it to the node.
    """

    def __init__(self, points: list[SweepPoint], cwd: str, gpus: int = 1) -> None:
        self.points = points
        self.cwd = cwd  # the points' paths are relative to where the sweep was submitted
        self.gpus = gpus

    @property
    def name(self) -> str:
        return self.points[0].name

    def __call__(self) -> list[dict[str, Any]]:
        from mimcli.sweep.execute import run_point

        os.chdir(self.cwd)
        console = Console(soft_wrap=True)
        outcomes = []
        for point in self.points:
            outcome = run_point(point, console, show_progress=False, gpus=self.gpus)
            note = f" ({outcome.message})" if outcome.message else ""
            console.print(f"{point.name}: {outcome.status}{note}", markup=False, highlight=False)
            outcomes.append({"point": point.name, "status": outcome.status, "message": outcome.message})
        locked = [f"{o['point']} ({o['message']})" for o in outcomes if o["status"] == "skipped-locked"]
        if locked:  # a failure, so that `mim sweep status` shows it with this line and --retry-failed takes it
            raise RuntimeError(f"left to the process holding its lock: {'; '.join(locked)}")
        return outcomes

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """submitit's hook on time-out or pre-emption: requeue this same task. The run's own checkpoint.pt
        (written every epoch, and every train.checkpoint_steps) is what it resumes from: nothing to save here."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def group_points(points: Sequence[SweepPoint]) -> list[list[SweepPoint]]:
    """One group per training run: an epochs sweep's points go with the run they are read from."""
    groups: dict[str, list[SweepPoint]] = {}
    for point in points:
        groups.setdefault((point.source or point).name, []).append(point)
    return [sorted(group, key=lambda p: p.source is not None) for group in groups.values()]


# -------------------------------------------------------------------------------------- choosing points


def choose_points(points: list[SweepPoint], retry_failed: bool) -> tuple[list[SweepPoint], dict[str, list[SweepPoint]]]:
    """(the points to submit, the others by why they are left out). Finished, queued and running points are
    never submitted; failed ones only with retry_failed, and then nothing else is."""
    sweep_dirs = unique([p.sweep_dir for p in points])
    latest = {(d, name): job for d in sweep_dirs for name, job in latest_jobs(read_jobs(d)).items()}
    slurm_ids = [str(j["job_id"]) for j in latest.values() if j.get("launcher") == "slurm"]
    sacct = slurm_states(slurm_ids)
    chosen: list[SweepPoint] = []
    left: dict[str, list[SweepPoint]] = {}
    for point in points:
        if point_state(point) == "finished":
            left.setdefault("done", []).append(point)
            continue
        state = point_status(point.name, point.run_dir, latest.get((point.sweep_dir, point.name)), sacct).state
        if state in ("queued", "running"):
            left.setdefault(state, []).append(point)
        elif (state == "failed") == retry_failed:
            chosen.append(point)
        else:
            left.setdefault("failed" if state == "failed" else "not failed", []).append(point)
    return chosen, left


# ------------------------------------------------------------------------------------------ executors


def executor_parameters(options: LaunchOptions, job_name: str) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for the options."""
    parameters: dict[str, Any] = {
        "job_name": job_name,
        "time": options.time_min,
        "nodes": 1,
        "ntasks_per_node": 1,  # one task per point; with several GPUs it starts torchrun itself
        "signal_delay_s": options.signal_delay_s,
        "array_parallelism": options.array_parallelism,
    }
    extra = {
        "partition": options.partition,
        "account": options.account,
        "gpus_per_node": options.gpus or None,
        "cpus_per_task": options.cpus,
        "mem": options.mem,
    }
    parameters.update({k: v for k, v in extra.items() if v is not None})
    if options.sbatch:
        parameters["additional_parameters"] = dict(options.sbatch)
    return parameters


def _slurm_executor(options: LaunchOptions, folder: Path, job_name: str, need_srun: bool = True) -> Any:
    submitit = require_submitit()
    if need_srun:
        try:
            slurm = submitit.SlurmExecutor(folder, max_num_timeout=options.requeues)
        except RuntimeError as error:  # no srun on this machine
            raise UsageError(f"--launcher slurm: {error} (submit from a SLURM login node)") from None
    else:  # the same object, less the check for srun: to print the script anywhere
        import shlex
        import sys

        slurm = submitit.SlurmExecutor.__new__(submitit.SlurmExecutor)
        submitit.core.core.PicklingExecutor.__init__(slurm, folder, max_num_timeout=options.requeues)
        slurm.python = shlex.quote(sys.executable)
    try:
        slurm.update_parameters(**executor_parameters(options, job_name))
    except ValueError as error:
        raise UsageError(f"--launcher slurm: {str(error).splitlines()[0]}") from None
    return slurm


def make_executor(options: LaunchOptions, folder: Path, job_name: str) -> submitit.Executor:
    submitit = require_submitit()
    if options.launcher == "local":
        local = submitit.LocalExecutor(folder, max_num_timeout=options.requeues)
        local.update_parameters(
            timeout_min=options.time_min, gpus_per_node=options.gpus, signal_delay_s=options.signal_delay_s
        )
        return local  # type: ignore[no-any-return]
    return _slurm_executor(options, folder, job_name)  # type: ignore[no-any-return]


def sbatch_script(options: LaunchOptions, folder: Path, job_name: str, tasks: int) -> str:
    """The sbatch file submitit writes for an array of `tasks` tasks (what `--dry-run` prints), made by
    submitit's own SlurmExecutor, so it is the script a submission sends."""
    slurm = _slurm_executor(options, folder, job_name, need_srun=False)
    if tasks > 1:
        slurm.parameters["map_count"] = tasks  # what SlurmExecutor sets for an array
    return str(slurm._make_submission_file_text(slurm._submitit_command_str, "dry-run"))


# ------------------------------------------------------------------------------------------ submitting


def _job_name(points: Sequence[SweepPoint]) -> str:
    return "mim-" + "+".join(d.name for d in unique([p.sweep_dir for p in points]))


def submit(
    points: list[SweepPoint],
    options: LaunchOptions,
    retry_failed: bool = False,
    dry_run: bool = False,
    console: Console | None = None,
) -> list[Any]:
    """Submit the points that need it as one job array; record the jobs; return submitit's Job objects."""
    if options.launcher not in LAUNCHERS:
        raise UsageError(f"--launcher {options.launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    require_submitit()
    console = console or Console()
    check_conflicts(points)
    sweep_dirs = unique([p.sweep_dir for p in points])
    if len(sweep_dirs) != 1:
        raise UsageError("a launcher submits one sweep folder at a time")
    sweep_dir = sweep_dirs[0]
    chosen, left = choose_points(points, retry_failed)
    for why, skipped in left.items():
        if why == "not failed":
            continue
        hint = " (resubmit them with --retry-failed)" if why == "failed" else ""
        console.print(f"{len(skipped)} point(s) {why}, not submitted{hint}", highlight=False)
    # an epochs sweep's task holds its training run and the points read from it (finished ones are skipped)
    groups = [g for g in group_points(points) if any(p in chosen for p in g)]
    folder = jobs_dir(sweep_dir).absolute() / "%j"
    name = _job_name(points)
    if not groups:
        console.print(f"nothing to submit in {sweep_dir}", highlight=False)
        return []
    console.print(
        f"{options.launcher}: {len(groups)} task(s) for {sum(len(g) for g in groups)} point(s) of {sweep_dir}",
        highlight=False,
    )
    if dry_run:
        for group in groups:
            console.print(f"# task: {', '.join(p.name for p in group)}", markup=False, highlight=False)
        if options.launcher == "slurm":
            script = sbatch_script(options, folder, name, len(groups))
            console.print(script, markup=False, highlight=False, soft_wrap=True)
        return []
    executor = make_executor(options, folder, name)
    tasks = [PointTask(group, os.getcwd(), max(1, options.gpus)) for group in groups]
    jobs = executor.submit_array(tasks)
    submitted = provenance.now()
    record_jobs(
        sweep_dir,
        {p.name: os.path.relpath(p.run_dir, sweep_dir) for p in points},
        [
            {
                "points": [p.name for p in task.points],
                "job_id": job.job_id,
                "launcher": options.launcher,
                "host": socket.gethostname(),
                "submitted": submitted,
                "stdout": str(job.paths.stdout),
                "stderr": str(job.paths.stderr),
                "result": str(job.paths.result_pickle),
            }
            for task, job in zip(tasks, jobs)
        ],
    )
    ids = ", ".join(job.job_id for job in jobs)
    console.print(f"submitted {len(jobs)} task(s): {ids}", highlight=False, soft_wrap=True)
    return list(jobs)


def wait(jobs: Sequence[Any], poll_s: float = 1.0) -> None:
    """Until every job has ended (the local launcher waits for its jobs; SLURM jobs are left to run)."""
    while not all(job.done() for job in jobs):
        time.sleep(poll_s)
    for job in jobs:  # submitit's local controller also makes the folder named by the pattern itself
        with contextlib.suppress(OSError):
            (job.paths.folder.parent / "%j").rmdir()


def launch_options(
    launcher: str,
    partition: str | None = None,
    account: str | None = None,
    gpus: int | None = None,
    cpus: int | None = None,
    mem: str | None = None,
    time_limit: str | None = None,
    sbatch: Sequence[str] = (),
) -> LaunchOptions:
    """LaunchOptions from the command line's text; the local launcher takes no SLURM option."""
    if launcher not in LAUNCHERS:
        raise UsageError(f"--launcher {launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    if launcher == "local":
        slurm_only = {"--partition": partition, "--account": account, "--cpus": cpus, "--mem": mem}
        given = next((k for k, v in slurm_only.items() if v is not None), None) or ("--sbatch" if sbatch else None)
        if given:
            raise UsageError(f"{given} is a SLURM option: it needs --launcher slurm")
    options = LaunchOptions(launcher, partition, account, gpus or 0, cpus, mem, sbatch=parse_sbatch(sbatch))
    if launcher == "slurm" and gpus is None:
        options.gpus = 1
    if time_limit is not None:
        options.time_min = parse_time(time_limit)
    return options


def launch_sweep(
    points: list[SweepPoint],
    options: LaunchOptions,
    retry_failed: bool = False,
    dry_run: bool = False,
    console: Console | None = None,
) -> bool:
    """Submit; the local launcher then waits for its jobs and prints the status and the report.
    True when a point failed (local launcher only: SLURM jobs are followed with `mim sweep status`)."""
    from mimcli.sweep.output import print_report, print_status

    console = console or Console()
    jobs = submit(points, options, retry_failed, dry_run, console)
    sweep_dir = points[0].sweep_dir
    if options.launcher == "slurm" or dry_run:
        if jobs:
            console.print(f"follow them with: mim sweep status {sweep_dir}", highlight=False)
        return False
    wait(jobs)
    statuses = print_status(sweep_dir, console)
    print_report(sweep_dir, console)
    return any(s.state == "failed" for s in statuses)
