"""`mim sweep --launcher`: a local job array that is interrupted, requeued and resumed bit-exactly; the
sbatch script submitit sends to SLURM; failed points and --retry-failed; `mim sweep status`."""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
import torch

from mimcli.rundir import runs
from mimcli.sweep import launch, plan_sweep
from mimcli.sweep.jobs import read_jobs, sweep_status
from mimcli.train.loop import pretrain
from tests.tiny import TINY_BASE

pytest.importorskip("submitit")

TINY = [*TINY_BASE, "train.batch_size=32", "train.device=cpu", "train.threads=1"]
PROBED = [*TINY, "probe.datasets=['shapes:shape']", "probe.epochs=5"]
# enough epochs that a tiny task on an idle machine is still training when the test catches its first save
EPOCHS = 12
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
        assert status["status"] == "running", status
        assert status["epochs_done"] < EPOCHS, status
        os.kill(pid, signal.SIGUSR2)
    finally:
        os.kill(pid, signal.SIGCONT)
    return int(pid)


@pytest.mark.slow
def test_local_launcher_requeues_a_stopped_task_and_it_resumes_bit_exactly(tmp_path, monkeypatch, cli, quiet):
    monkeypatch.chdir(tmp_path)
    points = plan_sweep("seeds", "simclr", "0,1,2", [*PROBED, f"train.epochs={EPOCHS}"], out_root="runs")
    jobs = launch.submit(points, launch.LaunchOptions("local"), console=quiet())
    assert len(jobs) == 3
    victim = points[1]
    stop_mid_training(victim.run_dir)
    launch.wait(jobs)

    record = {job["points"][0]: job for job in read_jobs(victim.sweep_dir)["jobs"]}
    log = Path(record[victim.name]["stdout"]).read_text()
    assert "Requeued job" in log
    assert f"{victim.name}: resuming in" in log  # submitit requeued it, mim resumed
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
        assert " done " in row
        assert record[point.name]["job_id"] in row
    assert "3 done" in out
    code, out, err = cli("report", "runs/seeds-simclr", "--format", "json")
    assert code == 0, err
    assert {Path(r["run"]).name for r in json.loads(out)} == {"seed-0", "seed-1", "seed-2"}


def fake_slurm(bin_dir: Path, states: dict[str, str]) -> Path:
    """srun (so submitit sees a cluster), sbatch (keeps each script, answers job 4242, 4243, ...) and sacct
    (answers `states`) on PATH; returns the folder the scripts are kept in."""
    scripts = bin_dir / "scripts"
    scripts.mkdir(parents=True)
    commands = {
        "srun": "exit 0",
        "sbatch": f'n=$(ls {scripts} | wc -l); cp "$1" {scripts}/$n.sh; echo "Submitted batch job $((4242 + n))"',
        "sacct": "".join(f"echo '{job}|{state}'\n" for job, state in states.items()),
    }
    for name, body in commands.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return scripts


SLURM = ["--launcher", "slurm", "--partition", "gpu", "--account", "lab", "--gpus", "2", "--cpus", "8"]
SLURM += ["--mem", "64G", "--time", "1-00:00:00", "--sbatch", "qos=high", "--sbatch", "exclusive"]


def test_slurm_launcher_writes_the_array_script_and_retries_only_failed_points(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    bin_dir = tmp_path / "bin"
    scripts = fake_slurm(bin_dir, {"4242_0": "RUNNING", "4242_1": "PENDING", "4242_2": "FAILED"})
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    sweep = ["sweep", "lambda", "--preset", "simclr-rc", "--values", "0.01,0.1,1", *SETS, "--no-progress"]

    code, dry, err = cli(*sweep, *SLURM, "--dry-run")
    assert code == 0, err
    assert not list(scripts.iterdir())  # a dry run submits nothing
    code, out, err = cli(*sweep, *SLURM)
    assert code == 0, err
    script = (scripts / "0.sh").read_text()
    folder = tmp_path / "runs" / "lambda-simclr-rc" / ".submitit"
    for line in [
        "#SBATCH --array=0-2%3",  # one task per point
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64G",
        "#SBATCH --time=1440",
        "#SBATCH --signal=USR2@120",  # submitit's time-limit warning: checkpoint and requeue
        "#SBATCH --qos=high",
        "#SBATCH --exclusive",
        "#SBATCH --job-name=mim-lambda-simclr-rc",
        f"#SBATCH --output={folder}/%A_%a/%A_%a_0_log.out",  # one log per array task
    ]:
        assert line in script.splitlines(), line
    command = script.splitlines()[-1]
    assert command.startswith("srun --unbuffered --output")
    assert command.endswith(f"{sys.executable} -u -m submitit.core._submit {folder}/%j")
    assert script in dry  # --dry-run printed the very script

    jobs = read_jobs(tmp_path / "runs" / "lambda-simclr-rc")["jobs"]
    assert [(j["points"], j["job_id"]) for j in jobs] == [
        (["simclr-rc/lambda-0.01"], "4242_0"),
        (["simclr-rc/lambda-0.1"], "4242_1"),
        (["simclr-rc/lambda-1"], "4242_2"),
    ]
    task = pickle.loads(Path(folder / "4242_1" / "4242_1_submitted.pkl").read_bytes()).function
    assert [p.name for p in task.points] == ["simclr-rc/lambda-0.1"]
    assert task.gpus == 2
    assert task.points[0].config.regularizer.lam == 0.1
    assert task.checkpoint().function is task  # requeued as itself: it resumes from the run's checkpoint

    # the third task fails: its traceback ends its stderr; submitit leaves an error result
    failed = folder / "4242_2"
    (failed / "4242_2_0_log.err").write_text("Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
    (failed / "4242_2_0_result.pkl").write_bytes(pickle.dumps(("error", "RuntimeError: CUDA out of memory")))
    code, out, err = cli("sweep", "status", "runs/lambda-simclr-rc")
    assert code == 0, err
    states = {line.split()[1]: line.split()[3] for line in out.splitlines() if line.startswith("│ simclr-rc")}
    assert states == {
        "simclr-rc/lambda-0.01": "running",
        "simclr-rc/lambda-0.1": "queued",
        "simclr-rc/lambda-1": "failed",
    }
    assert "1 running, 1 queued, 1 failed" in out
    assert "RuntimeError: CUDA out of memory" in out

    # a task killed outright leaves its lock (on a node this machine cannot check): status says to remove it,
    # and a task that finds it fails naming the holder rather than ending as if the point were done
    lock = tmp_path / "runs" / "lambda-simclr-rc" / "simclr-rc" / "lambda-1.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": 7, "host": "gpu-node-7", "time": "2026-01-01T00:00:00"}))
    failed_point = sweep_status(Path("runs/lambda-simclr-rc"))[2]
    assert failed_point.state == "failed"
    assert f"remove {lock.relative_to(tmp_path)} before retrying" in failed_point.note
    task = pickle.loads(Path(folder / "4242_2" / "4242_2_submitted.pkl").read_bytes()).function
    with pytest.raises(
        RuntimeError, match=r"left to the process holding its lock: simclr-rc/lambda-1 \(locked by pid 7"
    ):
        task()
    assert not (tmp_path / "runs" / "lambda-simclr-rc" / "simclr-rc" / "lambda-1").exists()  # nothing trained
    lock.unlink()

    code, out, err = cli(*sweep, *SLURM)  # nothing new: two in the queue, one failed
    assert code == 0
    assert "nothing to submit" in out
    assert "--retry-failed" in out
    assert len(list(scripts.iterdir())) == 1
    code, out, err = cli(*sweep, *SLURM, "--retry-failed")
    assert code == 0, err
    retry = (scripts / "1.sh").read_text()
    assert "--array" not in retry  # one task alone is a plain job
    assert read_jobs(tmp_path / "runs" / "lambda-simclr-rc")["jobs"][-1]["points"] == ["simclr-rc/lambda-1"]
    code, out, err = cli("sweep", "status", "runs/lambda-simclr-rc")
    assert "4243" in out
    assert "1 running, 2 queued" in out  # sacct does not know 4243 yet: queued


def test_launcher_input_errors_are_one_line(cli, monkeypatch):
    sweep = ["sweep", "seeds", "--preset", "simclr", "--values", "0", *SETS]
    for args, message in [
        (["--partition", "gpu"], "--partition is an option of --launcher slurm|local"),
        (["--launcher", "pbs"], "--launcher 'pbs': choose one of slurm, local"),
        (["--launcher", "local", "--account", "lab"], "--account is a SLURM option"),
        (["--launcher", "slurm", "--time", "soon"], "--time 'soon'"),
        (["--launcher", "slurm", "--shard", "1/2"], "--shard splits a sweep by hand"),
    ]:
        code, _, err = cli(*sweep, *args)
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert len(err.strip().splitlines()) == 1, (args, err)
    code, _, err = cli("sweep", "status")
    assert code == 2
    assert "needs the sweep folder" in err
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    code, _, err = cli(*sweep, "--launcher", "slurm")
    assert code == 2
    assert "pip install submitit" in err
    assert len(err.strip().splitlines()) == 1


def test_time_limits_in_sbatch_forms():
    assert [launch.parse_time(t) for t in ("90", "30:30", "02:00:00", "1-00:00:00", "1-12", "2-01:30")] == [
        90,
        31,
        120,
        1440,
        2160,
        2970,
    ]


@pytest.mark.slow
def test_a_point_with_two_gpus_trains_under_torchrun_and_the_task_probes_it(tmp_path, monkeypatch, quiet):
    """What an array task with --gpus 2 runs (here on the CPU, gloo): the point's training as two torchrun
    workers, each encoding a share of the probe features; the task, holding the lock, probes on the cache."""
    from mimcli.sweep import run_point

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    overrides = [*TINY, "probe.datasets=['shapes:shape']", "probe.protocol='knn'", "train.epochs=1"]
    (point,) = plan_sweep("seeds", "simclr", "0", overrides, out_root="runs")
    console = quiet()
    outcome = run_point(point, console, show_progress=False, gpus=2)
    log = console.file.getvalue()
    assert outcome.status == "ran", log
    assert outcome.trained, log
    assert outcome.probed, log
    assert "torch.distributed.run --standalone --nproc_per_node 2 -m mimcli.sweep.ddp" in log
    assert runs.read_json(point.run_dir / runs.STATUS)["status"] == "finished"
    assert len(list((point.run_dir / "features").glob("*.h5"))) == 2  # the workers cached train and test
    assert [r["status"] for r in runs.read_json(point.run_dir / runs.PROBE)["results"]] == ["ok"]
    assert not point.lock_path.exists()
