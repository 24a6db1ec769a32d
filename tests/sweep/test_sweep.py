"""`mim sweep`: planning, resume after a crash, shards, the one-training epochs sweep, locks, dry run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from mimcli import signals, sweep
from mimcli.config import load_config
from mimcli.errors import UsageError
from mimcli.rundir import lock, runs
from mimcli.sweep import execute
from mimcli.train.loop import Trainer
from tests.tiny import TINY_BASE

TINY = [*TINY_BASE, "train.batch_size=32", "train.device=cpu", "train.threads=1"]
PROBED = [*TINY, "probe.datasets=['shapes:shape']", "probe.epochs=5"]
UNPROBED = [*TINY, "probe.datasets=[]"]  # the presets probe seven real data sets


@pytest.fixture(autouse=True)
def restore_threads():
    """TINY sets train.threads=1 (ten times faster on a busy shared CPU); give the next tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def output(console: Console) -> str:
    return console.file.getvalue()


def counting_pretrain(monkeypatch) -> list[Path]:
    """Real training, recording the run directory of every call."""
    calls: list[Path] = []
    real = execute.pretrain

    def spy(config, run_dir, **kwargs):
        calls.append(Path(run_dir))
        return real(config, run_dir, **kwargs)

    monkeypatch.setattr(execute, "pretrain", spy)
    return calls


@pytest.fixture
def fake_pretrain(monkeypatch) -> list[tuple[Path, bool]]:
    """No training: writes the config and a finished run.json, records (run_dir, resume)."""
    calls: list[tuple[Path, bool]] = []

    def fake(config, run_dir, resume=False, force=False, console=None, show_progress=True):
        calls.append((Path(run_dir), resume))
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.save_config(run_dir, config)
        runs.write_json(run_dir / runs.STATUS, {"status": "finished", "epochs_done": config.train.epochs})

    monkeypatch.setattr(execute, "pretrain", fake)
    return calls


def snapshot(run_dir: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (runs.file_sha256(p), p.stat().st_mtime_ns) for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_lambda_sweep_trains_and_probes_every_point(tmp_path, monkeypatch, quiet):
    import mimcli.report

    calls = counting_pretrain(monkeypatch)
    reports = []
    monkeypatch.setattr(mimcli.report, "run_report", lambda paths, **kwargs: reports.append((paths, kwargs)))
    points = sweep.plan_sweep("lambda", "simclr-rc", "0.01,0.1", [*PROBED, "train.epochs=1"], out_root=tmp_path)
    assert [p.name for p in points] == ["simclr-rc/lambda-0.01", "simclr-rc/lambda-0.1"]
    console = quiet()
    outcomes = sweep.run_sweep(points, console=console, show_progress=False)
    assert [(o.status, o.trained, o.probed) for o in outcomes] == [("ran", True, True)] * 2
    assert calls == [
        tmp_path / "lambda-simclr-rc" / "simclr-rc" / "lambda-0.01",
        tmp_path / "lambda-simclr-rc" / "simclr-rc" / "lambda-0.1",
    ]
    for run_dir, lam in zip(calls, (0.01, 0.1)):
        config = runs.load_run_config(run_dir)
        assert (config.regularizer.kind, config.regularizer.lam) == ("rc", lam)
        assert runs.read_json(run_dir / runs.STATUS)["status"] == "finished"
        probe = runs.read_json(run_dir / runs.PROBE)
        assert probe["checkpoint"]["sha256"] == runs.file_sha256(run_dir / runs.BACKBONE)
        [record] = probe["results"]
        assert (record["dataset"], record["status"], record["n_test"]) == ("shapes:shape", "ok", 32)
        assert 0 <= record["metrics"]["acc_best_test"]["mean"] <= 100
        assert not lock.lock_path(run_dir).exists()
    assert reports == [([tmp_path / "lambda-simclr-rc"], {"fmt": "table", "console": console})]

    again = sweep.run_sweep(points, console=quiet(), show_progress=False, report=False)
    assert [o.status for o in again] == ["skipped-finished"] * 2
    assert len(calls) == 2


def test_killed_sweep_resumes_without_redoing_finished_points(tmp_path, monkeypatch, quiet):
    calls = counting_pretrain(monkeypatch)
    points = sweep.plan_sweep("seeds", "simclr", "0,1", [*PROBED, "train.epochs=2"], out_root=tmp_path)
    first, second = (p.run_dir for p in points)
    real_save = Trainer.save_checkpoint
    killed = []

    def save_then_die(self):  # SIGTERM lands after the second point's first checkpoint
        real_save(self)
        if self.run_dir == second and self.epoch == 1 and not killed:
            killed.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(signals.Stopped) as stopped:
        sweep.run_sweep(points, console=quiet(), show_progress=False, report=False)
    assert stopped.value.exit_code == 143
    assert stopped.value.message() == (
        f"stopped by SIGTERM: {second / runs.CHECKPOINT} holds epoch 1; "
        "finished points are kept: run the same `mim sweep` again to continue"
    )
    assert runs.read_json(second / runs.STATUS)["status"] == "running"
    assert [r["epoch"] for r in runs.read_metrics(second)] == [1]
    assert not lock.lock_path(second).exists()  # released on the way out
    assert [sweep.point_state(p) for p in points] == ["finished", "interrupted"]
    before = snapshot(first)
    dry = sweep.run_sweep(points, dry_run=True, console=quiet())
    assert [o.message for o in dry] == ["finished", "interrupted"]
    assert dry[0].commands == []
    assert dry[1].commands[0].endswith(f"--out {second} --resume")

    outcomes = sweep.run_sweep(points, console=quiet(), show_progress=False, report=False)
    assert [(o.status, o.trained, o.resumed) for o in outcomes] == [
        ("skipped-finished", False, False),
        ("ran", True, True),
    ]
    assert calls == [first, second, second]
    assert snapshot(first) == before
    assert [r["epoch"] for r in runs.read_metrics(second)] == [1, 2]
    assert runs.read_json(second / runs.STATUS)["status"] == "finished"
    assert sweep.missing_probes(second, points[1].config) == []


def test_shards_cover_the_grid_exactly_once(tmp_path, fake_pretrain, quiet):
    grid = ["train.lr=0.1,0.01,0.001", "train.seed=0,1"]
    points = sweep.plan_sweep("grid", "simclr", None, UNPROBED, grid, out_root=tmp_path)
    assert [p.name for p in points] == [
        "lr-0.1_seed-0",
        "lr-0.1_seed-1",
        "lr-0.01_seed-0",
        "lr-0.01_seed-1",
        "lr-0.001_seed-0",
        "lr-0.001_seed-1",
    ]
    assert [(p.config.train.lr, p.config.train.seed) for p in points] == [
        (0.1, 0),
        (0.1, 1),
        (0.01, 0),
        (0.01, 1),
        (0.001, 0),
        (0.001, 1),
    ]
    sweep.run_sweep(points, shard="1/2", console=quiet(), report=False)
    shard_one = [d for d, _ in fake_pretrain]
    sweep.run_sweep(points, shard=(2, 2), console=quiet(), report=False)
    shard_two = [d for d, _ in fake_pretrain[len(shard_one) :]]
    assert shard_one == [points[i].run_dir for i in (0, 2, 4)]
    assert shard_two == [points[i].run_dir for i in (1, 3, 5)]
    for spec in ("2/1", "0/2", "1/0", "x", "1-2"):
        with pytest.raises(UsageError, match="--shard"):
            sweep.parse_shard(spec)


def test_epochs_sweep_trains_once_and_probes_each_saved_epoch(tmp_path, monkeypatch, quiet):
    calls = counting_pretrain(monkeypatch)
    points = sweep.plan_sweep("epochs", "simclr", "3,1,2", PROBED, out_root=tmp_path)
    assert [p.name for p in points] == ["epochs-1", "epochs-2", "epochs-3"]
    outcomes = sweep.run_sweep(points, console=quiet(), show_progress=False, report=False)
    source = tmp_path / "epochs-simclr" / "epochs-3"
    assert calls == [source]
    assert [(o.status, o.trained, o.probed) for o in outcomes] == [
        ("ran", True, True),
        ("ran", False, True),
        ("ran", False, True),
    ]
    assert runs.load_run_config(source).train.save_epochs == [1, 2]
    weights, hashes = [], []
    for point, epoch in zip(points, (1, 2, 3)):
        config = runs.load_run_config(point.run_dir)
        assert (config.train.epochs, config.train.save_epochs) == (epoch, [] if epoch < 3 else [1, 2])
        assert [r["epoch"] for r in runs.read_metrics(point.run_dir)] == list(range(1, epoch + 1))
        assert runs.read_json(point.run_dir / runs.STATUS)["status"] == "finished"
        probe = runs.read_json(point.run_dir / runs.PROBE)
        hashes.append(runs.file_sha256(point.run_dir / runs.BACKBONE))
        assert probe["checkpoint"]["sha256"] == hashes[-1]
        assert probe["results"][0]["status"] == "ok"
        weights.append(torch.load(point.run_dir / runs.BACKBONE, weights_only=True))
    assert hashes[0] == runs.file_sha256(source / "backbones" / "epoch-1.pt")
    assert len(set(hashes)) == 3
    for a, b in ((0, 1), (1, 2)):
        assert any(not torch.equal(weights[a][k], weights[b][k]) for k in weights[a])
    again = sweep.run_sweep(points, console=quiet(), report=False)
    assert [o.status for o in again] == ["skipped-finished"] * 3
    assert len(calls) == 1


def write_lock(path: Path, pid: int, host: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"pid": pid, "host": host or socket.gethostname(), "start": lock._process_start(pid), "time": "earlier"}
        )
    )


def test_live_lock_skips_the_point_and_a_dead_holders_lock_is_taken_over(tmp_path, fake_pretrain, quiet):
    points = sweep.plan_sweep("seeds", "simclr", "0,1,2", UNPROBED, out_root=tmp_path)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        write_lock(points[0].lock_path, live.pid)
        write_lock(points[1].lock_path, dead.pid)
        write_lock(points[2].lock_path, 1, host="some-other-node")  # cannot be checked from here: live
        console = quiet()
        sweep.run_sweep(points, dry_run=True, console=console)
        assert f"# seed-0: new, locked by pid {live.pid}" in output(console)
        assert f"# seed-1: new, stale lock of pid {dead.pid}" in output(console)
        outcomes = sweep.run_sweep(points, console=quiet(), report=False)
    finally:
        live.kill()
        live.wait()
    assert [o.status for o in outcomes] == ["skipped-locked", "ran", "skipped-locked"]
    assert f"pid {live.pid}" in outcomes[0].message
    assert "another host" in outcomes[2].message
    assert f"stale lock of pid {dead.pid}" in outcomes[1].message
    assert fake_pretrain == [(points[1].run_dir, False)]
    assert points[0].lock_path.exists()
    assert points[2].lock_path.exists()  # not ours to remove
    assert not points[1].lock_path.exists()


def test_a_held_lock_excludes_a_second_holder_until_released(tmp_path):
    path = tmp_path / "point.lock"
    with lock.point_lock(path) as first:
        assert first.held
        with lock.point_lock(path) as second:
            assert not second.held
            assert second.holder["pid"] == os.getpid()
            assert second.holder["host"] == socket.gethostname()
        assert path.exists()
    assert not path.exists()
    with lock.point_lock(path) as third:
        assert third.held
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start": lock._process_start(os.getpid())}
    assert lock.holder_alive(me, path)
    assert not lock.holder_alive({**me, "start": "1"}, path)  # the pid now belongs to another process


def test_dry_run_prints_exact_commands_and_trains_nothing(tmp_path, monkeypatch, quiet):
    def forbidden(*args, **kwargs):
        raise AssertionError("a dry run trained or probed")

    monkeypatch.setattr(execute, "pretrain", forbidden)
    monkeypatch.setattr(execute, "run_probes", forbidden)
    points = sweep.plan_sweep(
        "lambda", ["simclr-rc", "simclr-lbe"], [0.01, "1"], [*PROBED, "train.epochs=1"], out_root=tmp_path / "runs"
    )
    console = quiet()
    outcomes = sweep.run_sweep(points, dry_run=True, console=console)
    assert not (tmp_path / "runs").exists()
    lines = output(console).splitlines()
    commands = [line for line in lines if line.startswith("mim ")]
    assert len(commands) == 4
    assert [o.status for o in outcomes] == ["dry-run"] * 4
    assert "# simclr-lbe/lambda-1: new" in lines
    for point, command in zip(points, commands):
        args = shlex.split(command)
        assert args[:4] == ["mim", "pretrain", "--preset", point.preset]
        sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        out = Path(args[args.index("--out") + 1])
        assert out == point.run_dir
        assert load_config(point.preset, sets) == point.config  # the command trains exactly this config
    assert points[3].config.regularizer.lam == 1.0
    assert points[3].config.regularizer.kind == "lbe"
    assert commands[0].endswith(
        "--set regularizer.lambda=0.01 --out "
        + str(tmp_path / "runs" / "lambda-simclr-rc+simclr-lbe" / "simclr-rc" / "lambda-0.01")
    )


def test_regularizers_sweep_takes_each_kinds_preset_lambda():
    simclr = sweep.plan_sweep("regularizers", "simclr", "none,rc,mib", UNPROBED)
    assert [(p.name, p.config.regularizer.kind, p.config.regularizer.lam) for p in simclr] == [
        ("kind-none", "none", 1.0),
        ("kind-rc", "rc", 1.0),
        ("kind-mib", "mib", 0.0005),
    ]
    byol = sweep.plan_sweep("regularizers", "byol", None, UNPROBED)  # default kinds; no byol-mib preset
    assert [(p.config.regularizer.kind, p.config.regularizer.lam) for p in byol] == [
        ("none", 1.0),
        ("rc", 0.1),
        ("lbe", 0.1),
    ]
    assert sweep.plan_sweep("regularizers", "byol", "mib", UNPROBED)[0].config.regularizer.lam == 1.0
    user = sweep.plan_sweep("regularizers", "byol", "rc,lbe", [*UNPROBED, "regularizer.lambda=0.3"])
    assert [p.config.regularizer.lam for p in user] == [0.3, 0.3]
    assert simclr[0].sweep_dir == Path("runs") / "regularizers-simclr"


def test_random_init_adds_one_untrained_point_per_training_seed_and_every_point_keeps_the_users_set():
    seeds = sweep.plan_sweep("seeds", "simclr", "0,1", UNPROBED, random_init=True)
    assert [(p.name, p.config.train.seed, p.config.train.epochs) for p in seeds] == [
        ("seed-0", 0, 30),
        ("seed-1", 1, 30),
        ("random-init-seed-0", 0, 0),
        ("random-init-seed-1", 1, 0),
    ]
    # --set train.threads=1 (TINY) pins the CPU threads of every point, the untrained ones included
    assert {p.config.train.threads for p in seeds} == {1}
    epochs = sweep.plan_sweep("epochs", ["simclr", "byol"], "1,2", UNPROBED, random_init=True)
    untrained = [(p.name, p.config.train.epochs, p.config.train.save_epochs, p.source) for p in epochs[-1:]]
    assert untrained == [("byol/random-init-seed-0", 0, [], None)]  # a run of its own, not cut from training
    assert [p.name for p in epochs].count("simclr/random-init-seed-0") == 1
    assert len(sweep.plan_sweep("regularizers", "simclr", None, UNPROBED)) == 3  # only when asked


def test_a_random_init_point_is_probed_untrained_and_the_report_subtracts_it(tmp_path, monkeypatch, quiet):
    calls = counting_pretrain(monkeypatch)
    points = sweep.plan_sweep(
        "regularizers", "simclr", "none", [*PROBED, "train.epochs=1"], out_root=tmp_path, random_init=True
    )
    console = quiet()
    sweep.run_sweep(points, console=console, show_progress=False)
    trained, untrained = (tmp_path / "regularizers-simclr" / name for name in ("kind-none", "random-init-seed-0"))
    assert calls == [trained, untrained]
    assert runs.read_json(untrained / runs.STATUS)["epochs_done"] == 0
    assert [m["epoch"] for m in runs.read_metrics(untrained)] == [0]  # only the estimates before any step
    shape = [runs.read_json(d / runs.PROBE)["results"][0]["metrics"]["acc_best_test"]["mean"] for d in calls]
    text = " ".join(output(console).split())
    rows = [line for line in output(console).splitlines() if line.startswith("│")]
    assert any(line.split("│")[1].strip() == "random init" for line in rows)  # the sweep's closing table
    assert "SimCLR - random init (n 1 vs 1; 95% Welch t-interval over training seeds): shapes:shape " in text
    assert f"{shape[0] - shape[1]:+.2f} (no interval: n = 1)." in text


def test_existing_run_of_another_config_is_refused(tmp_path, fake_pretrain, quiet):
    sweep.run_sweep(
        sweep.plan_sweep("seeds", "simclr", "0", UNPROBED, out_root=tmp_path), console=quiet(), report=False
    )
    changed = sweep.plan_sweep("seeds", "simclr", "0", [*UNPROBED, "train.lr=0.1"], out_root=tmp_path)
    with pytest.raises(UsageError, match=r"train.lr 0.0003 there, 0.1 planned"):
        sweep.run_sweep(changed, console=quiet(), report=False)
    assert len(fake_pretrain) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (("width", "simclr", "1"), "unknown sweep kind 'width'"),
        (("lambda", "simclr-rc", ""), "needs --values"),
        (("seeds", [], "1"), "at least one --preset"),
        (("lambda", "simclr-rc", "0.1,big"), "'big' is not a number"),
        (("epochs", "simclr", "1.5"), "'1.5' is not an integer"),
        (("epochs", "simclr", "0,2"), "not a positive number"),
        (("lambda", "simclr", "0.1"), "regularizer.kind='none'"),
        (("lambda", "simclr-rc", "-1"), "regularizer.lambda"),
        (("regularizers", "simclr", "rc,vib"), "unknown regulariser 'vib'"),
        (("grid", "simclr", None), "needs at least one --set-values"),
        (("grid", "simclr", "1"), "takes its values from --set-values"),
    ],
)
def test_bad_input_is_one_usage_error(args, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("[", r"\[")):
        sweep.plan_sweep(*args, UNPROBED)


def test_swept_keys_cannot_be_overridden_and_grid_specs_are_checked():
    with pytest.raises(UsageError, match=r"--set train.epochs clashes with the epochs sweep"):
        sweep.plan_sweep("epochs", "simclr", "1,2", [*UNPROBED, "train.epochs=5"])
    with pytest.raises(UsageError, match=r"--set regularizer.lambda clashes"):
        sweep.plan_sweep("lambda", "simclr-rc", "1", [*UNPROBED, "regularizer.lam=2"])
    with pytest.raises(UsageError, match=r"expected section.key=v1,v2"):
        sweep.plan_sweep("grid", "simclr", None, UNPROBED, ["train.lr"])
    with pytest.raises(UsageError, match=r"names train.lr twice"):
        sweep.plan_sweep("grid", "simclr", None, UNPROBED, ["train.lr=1", "train.lr=2"])
    assert sweep.split_values("[2,3], [4] ,'a,b'") == ["[2,3]", "[4]", "'a,b'"]
    layers = sweep.plan_sweep("grid", "simclr", None, UNPROBED, ["probe.layers=[2,3,4],[4]"])
    assert [(p.name, p.config.probe.layers) for p in layers] == [("layers-2-3-4", [2, 3, 4]), ("layers-4", [4])]


def test_a_probe_recorded_missing_is_retried(tmp_path):
    """probe.json saying 'missing' (the data was not on disk) does not finish a point: the next run retries it."""
    config = load_config(None, [*TINY, "probe.datasets=['cifar10', 'shapes:shape']"])
    (tmp_path / runs.BACKBONE).write_bytes(b"weights")
    sha = runs.file_sha256(tmp_path / runs.BACKBONE)
    records = [{"dataset": "cifar10", "status": "missing"}, {"dataset": "shapes:shape", "status": "ok"}]
    runs.write_json(tmp_path / runs.PROBE, {"checkpoint": {"sha256": sha}, "results": records})
    assert sweep.missing_probes(tmp_path, config) == ["cifar10"]
    records[0]["status"] = "ok"
    runs.write_json(tmp_path / runs.PROBE, {"checkpoint": {"sha256": sha}, "results": records})
    assert sweep.missing_probes(tmp_path, config) == []
