"""`mim sweep --launcher`: a local job array that is interrupted, requeued and resumed bit-exactly; the
sbatch script submitit sends to SLURM; failed points and --retry-failed; `mim sweep status`."""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
from pathlib import Path

import pytest
import torch

from mimcli import runs
from mimcli.sweep import launch, plan_sweep
from mimcli.sweep.jobs import read_jobs
from mimcli.train import pretrain
from tests.conftest import TINY_BASE, quiet

pytest.importorskip("submitit")

TINY = [*TINY_BASE, "train.batch_size=32", "train.device=cpu", "train.threads=1"]
PROBED = [*TINY, "probe.datasets=['shapes:shape']", "probe.epochs=5"]
SETS = [arg for key in [*TINY, "probe.datasets=[]"] for arg in ("--set", key)]


def wait_for(condition, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop_mid_training(run_dir: Path) -> int:
    """Freeze the task training `run_dir` once its first epoch is saved, check that epochs remain, and
    send it submitit's time-limit signal (USR2) before letting it go on: the signal lands mid-training."""
    lock = run_dir.with_name(run_dir.name + ".lock")
    wait_for(lambda: (run_dir / runs.CHECKPOINT).is_file() and lock.is_file(), f"{run_dir}'s first epoch")
    pid = json.loads(lock.read_text())["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        status = runs.read_json(run_dir / runs.STATUS)
        assert status["status"] == "running" and status["epochs_done"] < 3, status
        os.kill(pid, signal.SIGUSR2)
    finally:
        os.kill(pid, signal.SIGCONT)
    return int(pid)


def test_local_launcher_requeues_a_stopped_task_and_it_resumes_bit_exactly(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    points = plan_sweep("seeds", "simclr", "0,1,2", [*PROBED, "train.epochs=3"], out_root="runs")
    jobs = launch.submit(points, launch.LaunchOptions("local"), console=quiet())
    assert len(jobs) == 3
    victim = points[1]
    stop_mid_training(victim.run_dir)
    launch.wait(jobs)

    record = {job["points"][0]: job for job in read_jobs(victim.sweep_dir)["jobs"]}
    log = Path(record[victim.name]["stdout"]).read_text()
    assert "Requeued job" in log and f"{victim.name}: resuming in" in log  # submitit requeued it, mim resumed
    assert log.count("Starting with JobEnvironment") == 2  # the same task, started again
    for point in points:  # every task ended with a result; only the stopped one started twice
        assert pickle.loads(Path(record[point.name]["result"]).read_bytes())[0] == "success"
        if point is not victim:
            assert Path(record[point.name]["stdout"]).read_text().count("Starting with JobEnvironment") == 1

    reference = tmp_path / "uninterrupted"
    pretrain(victim.config, reference, console=quiet(), show_progress=False)
    resumed = torch.load(victim.run_dir / runs.BACKBONE, map_location="cpu", weights_only=True)
    expected = torch.load(reference / runs.BACKBONE, map_location="cpu", weights_only=True)
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)

    code, out, err = cli("sweep", "status", "runs/seeds-simclr")
    assert code == 0, err
    for point in points:
        row = next(line for line in out.splitlines() if f" {point.name} " in line)
        assert " done " in row and record[point.name]["job_id"] in row
    assert "3 done" in out
    code, out, err = cli("report", "runs/seeds-simclr", "--format", "json")
    assert code == 0, err
    assert {Path(r["run"]).name for r in json.loads(out)} == {"seed-0", "seed-1", "seed-2"}
