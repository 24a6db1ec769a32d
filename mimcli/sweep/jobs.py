"""The jobs a launcher submitted for a sweep, and where each point stands (`mim sweep status`).

<sweep>/.submitit/jobs.json records every submission: the points of the job, its id, the launcher, and
the paths of its logs and of submitit's result file. Where a point stands is read from its run directory
(run.json, probe.json, the lock), that record and, on SLURM, `sacct` when it is there; none of it needs
submitit or a GPU, so the status works from a login node while the jobs run.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimcli.errors import UsageError
from mimcli.rundir import runs
from mimcli.rundir.lock import holder_alive, lock_path
from mimcli.sweep.state import missing_probes, run_status

JOBS_DIR = ".submitit"  # hidden: `mim report` skips folders starting with a dot
JOBS_FILE = "jobs.json"
STATES = ("done", "running", "queued", "failed", "interrupted", "not started")
# sacct's states (JobState, the part before a space: "CANCELLED by 123") grouped as `mim sweep status` shows them
SLURM_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED", "CONFIGURING"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
SLURM_FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def jobs_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / JOBS_DIR


def read_jobs(sweep_dir: Path) -> dict[str, Any]:
    """{"points": {name: run dir}, "jobs": [submission, ...]}; empty when nothing was submitted."""
    try:
        data = runs.read_json(jobs_dir(sweep_dir) / JOBS_FILE)
    except FileNotFoundError:
        return {"points": {}, "jobs": []}
    except (OSError, ValueError) as error:
        raise UsageError(f"{jobs_dir(sweep_dir) / JOBS_FILE}: {runs.first_line(error)}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{jobs_dir(sweep_dir) / JOBS_FILE}: not a record of submitted jobs")
    return {"points": dict(data.get("points", {})), "jobs": list(data.get("jobs", []))}


def record_jobs(sweep_dir: Path, points: dict[str, str], jobs: Sequence[dict[str, Any]]) -> None:
    """Add submissions (and the sweep's points, in order) to jobs.json, written whole (temp + rename)."""
    data = read_jobs(sweep_dir)
    data["points"].update(points)
    data["jobs"].extend(jobs)
    jobs_dir(sweep_dir).mkdir(parents=True, exist_ok=True)
    runs.write_json(jobs_dir(sweep_dir) / JOBS_FILE, data)


def latest_jobs(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The last submission of each point."""
    return {name: job for job in data["jobs"] for name in job.get("points", [])}


@dataclass
class PointStatus:
    name: str
    run_dir: Path
    state: str  # one of STATES
    job_id: str = ""
    log: str = ""  # the job's stdout: the point's progress and submitit's notes (requeues)
    errors: str = ""  # the job's stderr: a failed point's traceback
    note: str = ""


def read_result(job: dict[str, Any]) -> tuple[str, Any] | None:
    """submitit's ("success", value) or ("error", traceback text) for a job, None while it has none."""
    path = Path(job.get("result", ""))
    if not job.get("result") or not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            outcome = pickle.load(handle)  # written by submitit in this user's own sweep folder
    except Exception as error:  # a half-written or foreign file: say so rather than fail the whole table
        return "error", f"unreadable result {path}: {runs.first_line(error)}"
    return (str(outcome[0]), outcome[1]) if isinstance(outcome, tuple) and len(outcome) == 2 else None


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """{job id: sacct state} for SLURM job ids; {} where sacct is not installed or does not answer."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    command = ["sacct", "--noheader", "--parsable2", "--format=JobID,State", "-j", ",".join(sorted(set(job_ids)))]
    try:
        text = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in text.splitlines():
        job_id, _, state = line.partition("|")
        if "." not in job_id:  # the job itself, not its steps (123_4.batch, 123_4.0)
            states[job_id] = state.split(" ")[0]
    return states


def _process_alive(pid: str, host: str) -> bool:
    if host != socket.gethostname():
        return True  # cannot be checked from here
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass
    return True


def _lock(run_dir: Path) -> str:
    """ "here" (a live process of this host holds the point's lock), "elsewhere" (another host's: cannot be
    checked), or "" (no lock, or one left by a dead process of this host, which the next taker takes over)."""
    path = lock_path(run_dir)
    try:
        holder = runs.read_json(path)
    except FileNotFoundError:
        return ""
    except (OSError, ValueError):
        holder = {}
    holder = holder if isinstance(holder, dict) else {}
    if holder.get("host", socket.gethostname()) != socket.gethostname():
        return "elsewhere"
    return "here" if holder_alive(holder, path) else ""


def _finished(run_dir: Path) -> bool:
    if run_status(run_dir).get("status") != "finished":
        return False
    try:
        config = runs.load_run_config(run_dir)
    except (OSError, ValueError, UsageError):
        return False
    return not missing_probes(run_dir, config)


def _job_state(job: dict[str, Any] | None, sacct: dict[str, str]) -> tuple[str, str]:
    """(state of the job itself, a note): queued | running | failed | ended | '' (no job)."""
    if job is None:
        return "", ""
    result = read_result(job)
    if result is not None:
        return ("ended", "") if result[0] == "success" else ("failed", "")
    if job.get("launcher") == "local":
        alive = _process_alive(str(job.get("job_id")), str(job.get("host", "")))
        return ("running", "") if alive else ("failed", "the job ended without a result")
    state = sacct.get(str(job.get("job_id")), "")
    if state in SLURM_QUEUED:
        return "queued", state.lower() if state != "PENDING" else ""
    if state in SLURM_RUNNING:
        return "running", ""
    if state in SLURM_FAILED:
        return "failed", f"slurm: {state.lower()}"
    if state == "COMPLETED":
        return "ended", ""
    started = Path(job.get("stdout", "")).is_file() if job.get("stdout") else False
    return ("running", "started (no sacct)") if started else ("queued", "")


def point_status(name: str, run_dir: Path, job: dict[str, Any] | None, sacct: dict[str, str]) -> PointStatus:
    status = PointStatus(name, run_dir, "not started")
    if job is not None:
        status.job_id, status.log, status.errors = (str(job.get(k, "")) for k in ("job_id", "stdout", "stderr"))
    if _finished(run_dir):
        status.state = "done"
        return status
    job_state, status.note = _job_state(job, sacct)
    checkpoint = (run_dir / runs.CHECKPOINT).is_file()
    lock = _lock(run_dir)
    if lock == "elsewhere" and job_state == "failed":  # its task was killed outright (SIGKILL, a node lost)
        status.state = "failed"
        stale = os.path.relpath(lock_path(run_dir))  # the lock is keyed on the real path: shown from here
        stale = stale if not stale.startswith("..") else str(lock_path(run_dir))
        status.note = "; ".join(n for n in (status.note, f"remove {stale} before retrying") if n)
    elif lock:
        status.state = "running"  # a job or a local `mim sweep` works on it right now
    elif job_state in ("queued", "running", "failed"):
        status.state = job_state
    elif checkpoint:
        status.state = "interrupted"
    if job_state == "ended" and status.state != "running":
        result = read_result(job or {})
        status.note = f"the job ended with the point unfinished: {result[1] if result else ''}".rstrip(": ")
    if checkpoint and status.state != "done":
        epochs = run_status(run_dir).get("epochs_done")
        status.note = "; ".join(n for n in (status.note, f"checkpoint at epoch {epochs}" if epochs else "") if n)
    return status


def sweep_status(sweep_dir: Path) -> list[PointStatus]:
    """Every point the launcher was given (in order), then any other run directory in the folder."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UsageError(f"{sweep_dir} is not a folder")
    data = read_jobs(sweep_dir)
    points = {name: sweep_dir / rel for name, rel in data["points"].items()}
    for config in sorted(sweep_dir.rglob(runs.CONFIG)):
        name = config.parent.relative_to(sweep_dir).as_posix()
        if not name.startswith(".") and name not in points:
            points[name] = config.parent
    if not points:
        raise UsageError(f"{sweep_dir} holds no sweep points (no run directories, no submitted jobs)")
    latest = latest_jobs(data)
    slurm_ids = [str(j["job_id"]) for j in latest.values() if j.get("launcher") == "slurm" and not read_result(j)]
    sacct = slurm_states(slurm_ids)
    return [point_status(name, run_dir, latest.get(name), sacct) for name, run_dir in points.items()]


def log_tail(path: str | Path, lines: int = 10) -> list[str]:
    """The last lines of a log ([] when it is not there)."""
    try:
        with Path(path).open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.rstrip("\n").splitlines()[-lines:]
