"""A signal (SIGTERM at a cluster's time limit, Ctrl-C's SIGINT, SIGHUP) stops any command in order:
the step is finished and saved, the lock released, temporary files removed, one line says what was
kept, the exit status is 128 + the signal; a requeued `--resume` continues bit-exactly.

The training cases send a real signal to a real `mim pretrain` process. To know where the signal
lands, the process runs `mim` through a small wrapper that slows the steps from one step on and
writes a marker file there; the test sends the signal once the marker exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mimcli.config import load_config
from mimcli.rundir import lock, runs
from mimcli.train import loop as train
from tests.data.test_stream import make_imagenet
from tests.tiny import TINY_KEYS

# 3 epochs of 4 steps: the marker is written at the 6th step (epoch 2, step 2), which then takes 0.3 s
KEYS = [*TINY_KEYS, "train.batch_size=16", "train.epochs=3", "train.threads=1"]
MARK_STEP = 6
WRAPPER = """
import sys, time
from pathlib import Path
from mimcli.train import loop as train

marker, mark = Path(sys.argv[1]), int(sys.argv[2])
real_batch, count = train.Batch, [0]

def slow_batch(*args, **kwargs):
    count[0] += 1
    if count[0] >= mark:
        marker.touch()
        time.sleep(0.3)
    return real_batch(*args, **kwargs)

train.Batch = slow_batch
sys.argv = ["mim", *sys.argv[3:]]
from mimcli.cli import main
main()
"""


def stream_keys(root: Path) -> list[str]:
    """The same run in stream mode with a DataLoader worker: 18 images, batch 4 (4 steps an epoch)."""
    return [
        *TINY_KEYS,
        "data.dataset=imagefolder",
        f"data.root='{root}'",
        "data.image_size=16",
        "data.loader=stream",
        "data.workers=1",
        "train.batch_size=4",
        "train.epochs=3",
        "train.threads=1",
    ]


def set_args(keys: list[str]) -> list[str]:
    return [arg for key in keys for arg in ("--set", key)]


def stop_mid_epoch(run_dir: Path, keys: list[str], signum: int, group: bool) -> tuple[int, str]:
    """Start `mim pretrain` in its own session, signal it (or its whole process group) at step MARK_STEP."""
    marker = run_dir.with_name("marker")
    command = [sys.executable, "-c", WRAPPER, str(marker), str(MARK_STEP)]
    command += ["pretrain", *set_args(keys), "--no-progress", "--out", str(run_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if group:
        os.killpg(process.pid, signum)  # what a terminal's Ctrl-C or a cluster does: workers get it too
    else:
        process.send_signal(signum)
    _, err = process.communicate(timeout=240)
    return process.returncode, err.decode()


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / runs.CHECKPOINT, weights_only=True)["model"]


@pytest.mark.parametrize(
    ("signum", "stream", "group"),
    [(signal.SIGTERM, False, False), (signal.SIGINT, True, True)],
    ids=["sigterm", "sigint-stream-workers-group"],
)
@pytest.mark.slow
def test_a_signal_saves_the_step_releases_the_lock_and_resume_is_bit_exact(cli, tmp_path, signum, stream, group, quiet):
    if stream:
        make_imagenet(tmp_path / "data")
        keys, steps = stream_keys(tmp_path / "data"), 4
    else:
        keys, steps = KEYS, 4
    code, err = stop_mid_epoch(tmp_path / "run", keys, signum, group)
    assert code == 128 + signum, err
    name = signal.Signals(signum).name
    line = " ".join(err.split())
    expected = f"stopped by {name}: {tmp_path / 'run' / runs.CHECKPOINT} holds epoch 1 and 2 of {steps} steps"
    assert line.startswith(expected), err
    assert line.endswith("continue with --resume"), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    # a requeued job on another node: no lock is left to refuse it, no temporary file lies around
    assert not lock.lock_path(tmp_path / "run").exists()
    assert not [p.name for p in (tmp_path / "run").iterdir() if runs.TEMPORARY.match(p.name)]
    state = torch.load(tmp_path / "run" / runs.CHECKPOINT, weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 2)

    code, _, err = cli("pretrain", *set_args(keys), "--no-progress", "--out", str(tmp_path / "run"), "--resume")
    assert code == 0, err
    train.pretrain(load_config(None, keys), tmp_path / "straight", console=quiet(), show_progress=False)
    resumed, straight = weights(tmp_path / "run"), weights(tmp_path / "straight")
    assert resumed.keys() == straight.keys()
    for key, tensor in straight.items():
        assert torch.equal(resumed[key], tensor), key
    assert [m["loss"] for m in runs.read_metrics(tmp_path / "run")] == [
        m["loss"] for m in runs.read_metrics(tmp_path / "straight")
    ]


def send_during(monkeypatch, module: object, name: str, signum: int) -> None:
    """Replace module.name by a call that first sends `signum` to this very process (a real signal)."""
    real = getattr(module, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, signalled)


def test_a_signal_while_packing_removes_the_temporary_file_and_says_so(cli, tmp_path, monkeypatch):
    from mimcli.data import packing

    make_imagenet(tmp_path / "data")
    send_during(monkeypatch, packing, "_write_split", signal.SIGINT)
    code, _, err = cli("pack", str(tmp_path / "data"), str(tmp_path / "data.h5"))
    assert code == 130, err
    assert (
        " ".join(err.split())
        == f"stopped by SIGINT: {tmp_path / 'data.h5'} was not written (its temporary file is removed)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # neither the pack nor a temporary file


def test_a_signal_while_probing_keeps_probe_json_and_talks_about_probes(cli, tmp_path, monkeypatch, quiet):
    from mimcli.probe import cache as features

    train.pretrain(
        load_config(None, [*TINY_KEYS, "run.name=run"]), tmp_path / "run", console=quiet(), show_progress=False
    )
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    send_during(monkeypatch, features, "_checksummed", signal.SIGHUP)  # inside the temporary file
    code, _, err = cli("probe", str(tmp_path / "run"), "--datasets", "shapes:shape", "--protocol", "knn")
    assert code == 129, err
    line = " ".join(err.split())
    assert line.startswith("stopped by SIGHUP: probe.json keeps each data set probed"), err
    assert "--resume" not in line
    assert "epoch" not in line
    after = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert after in (before, sorted([*before, runs.FEATURES]))
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_a_launcher_hands_the_signal_on_to_its_child_and_returns_its_status(tmp_path):
    """`--gpus N` waits for torchrun: a SIGTERM is sent on to the child (which decides how to stop), not
    answered by killing it."""
    import threading

    from mimcli import signals

    ready = tmp_path / "ready"
    child = (
        "import signal, sys, time, pathlib\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )

    def signal_when_ready() -> None:
        while not ready.exists():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_when_ready, daemon=True).start()
    with signals.handle_signals():
        assert signals.run_forwarding_signals([sys.executable, "-c", child]) == 7
