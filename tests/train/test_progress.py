"""Training feedback: per-step bar without per-step syncs, plain lines in logs, TensorBoard, run.json."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from mimcli.config import load_config
from mimcli.data.shapes import generate_shapes
from mimcli.errors import UsageError
from mimcli.rundir import provenance, runs
from mimcli.train.loop import build_trainer, pretrain
from mimcli.train.progress import (
    LiveProgress,
    PlainProgress,
    TrainingProgress,
    format_duration,
    make_progress,
)
from tests.tiny import TINY_KEYS

TINY = [*TINY_KEYS, "train.batch_size=16", "train.epochs=2"]
DATA = generate_shapes(64, seed=0)  # 4 steps per epoch


def log_console() -> tuple[Console, io.StringIO]:
    """What a SLURM log or a pipe is: not a terminal."""
    buffer = io.StringIO()
    return Console(file=buffer, width=200, force_terminal=False), buffer


class Recorder(TrainingProgress):
    """Counts the loop's calls: step() every step, values() only at log points."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def step(self) -> None:
        super().step()
        self.calls.append("step")

    def values(self, terms: dict[str, float]) -> None:
        super().values(terms)
        self.calls.append("values")


def test_bar_advances_every_step_but_reads_the_loss_only_at_log_points(tmp_path):
    config = load_config(None, [*TINY, "train.log_every=3"])
    trainer = build_trainer(config, tmp_path, data=DATA)
    recorder = Recorder(Console(file=io.StringIO()), 2, 0, trainer.steps_per_epoch, 16)
    result = trainer.train_epoch(recorder)
    assert trainer.steps_per_epoch == 4
    assert recorder.calls.count("step") == 4
    assert recorder.calls.count("values") == 2  # step 3 and the last (4): the only host syncs
    assert [i for i, c in enumerate(recorder.calls) if c == "values"] == [2, 4]
    # the running mean read at the last step is the epoch mean the loop returns
    assert recorder.terms["loss"] == pytest.approx(result.terms["loss"], rel=1e-6)


def test_without_a_terminal_one_flushed_line_per_epoch_and_every_n_steps(tmp_path):
    console, buffer = log_console()
    pretrain(load_config(None, TINY), tmp_path / "a", console=console, show_progress=True)
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    metrics = runs.read_metrics(tmp_path / "a")
    assert f"loss {metrics[0]['loss']:.4f}" in lines[0]
    assert "img/s" in lines[0]

    console, buffer = log_console()
    pretrain(load_config(None, [*TINY, "train.print_every=2"]), tmp_path / "b", console=console, show_progress=False)
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("epoch ")]
    steps = [line for line in lines if " step " in line]
    assert [line.split()[3] for line in steps] == ["2/4", "2/4"]  # step 4 is the epoch line itself
    assert all("ETA" in line and "loss " in line for line in steps)
    assert len(lines) == 4


def test_live_bar_on_a_terminal_tracks_epoch_and_run():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    progress = make_progress(console, True, epochs=3, start_epoch=1, steps_per_epoch=5, batch_images=16)
    assert isinstance(progress, LiveProgress)
    with progress:
        progress.start_epoch(1)
        for _ in range(5):
            progress.step()
        progress.values({"loss": 1.25, "loss_method": 1.0})
        run, epoch = progress.bar.tasks
        assert (run.total, run.completed) == (10, 5)  # two epochs left in this session
        assert (epoch.description, epoch.total, epoch.completed) == ("epoch 2/3", 5, 5)
        assert epoch.fields["terms"] == "loss 1.2500"
        assert epoch.fields["rate"].endswith("img/s")
    assert isinstance(make_progress(console, False, 3, 0, 5, 16), PlainProgress)
    assert isinstance(make_progress(log_console()[0], True, 3, 0, 5, 16), PlainProgress)


def test_durations_read_like_a_clock():
    assert format_duration(59.6) == "1:00"
    assert format_duration(3725) == "1:02:05"


def test_tensorboard_mirrors_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = load_config(None, [*TINY, "train.log=['jsonl', 'tensorboard']", "train.log_every=2"])
    pretrain(config, tmp_path / "run", console=log_console()[0], show_progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    metrics = runs.read_metrics(tmp_path / "run")
    epoch_loss = events.Scalars("epoch/loss")
    assert [e.step for e in epoch_loss] == [4, 8]
    assert [e.value for e in epoch_loss] == pytest.approx([m["loss"] for m in metrics], rel=1e-6)
    assert [e.step for e in events.Scalars("step/loss")] == [2, 4, 6, 8]
    assert {"step/lr", "step/images_per_s", "step/loss_method", "epoch/images_per_s"} <= set(events.Tags()["scalars"])


def test_metrics_jsonl_cannot_be_switched_off():
    with pytest.raises(UsageError, match="jsonl"):
        load_config(None, ["train.log=['tensorboard']"])


def git_checkout(folder: Path) -> str:
    """A one-commit git repository at `folder` (a stand-in mim checkout); its HEAD."""

    def git(*args: str) -> str:
        command = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    folder.mkdir()
    git("init", "-q")
    (folder / "tracked.txt").write_text("v1\n")
    git("add", "tracked.txt")
    git("-c", "commit.gpgsign=false", "commit", "-q", "-m", "one")
    return git("rev-parse", "HEAD")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_run_json_records_what_reproduction_needs(tmp_path, monkeypatch):
    # The commit is read from a checkout of the test's own: comparing with the live mim checkout's HEAD
    # failed whenever a commit landed there while the suite ran (HEAD moved between run and assertion).
    checkout = tmp_path / "checkout"
    head = git_checkout(checkout)
    monkeypatch.setattr(provenance, "SOURCE", checkout.resolve())
    pretrain(
        load_config(None, [*TINY, "train.epochs=1"]), tmp_path / "run", console=log_console()[0], show_progress=False
    )
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    import torch

    import mimcli

    assert info["mim_version"] == mimcli.__version__
    assert info["torch"] == torch.__version__
    assert info["cuda"] == torch.version.cuda
    assert info["device"] == "cpu"
    assert info["device_name"]
    assert info["threads"] == torch.get_num_threads()
    assert info["status"] == "finished"
    assert info["started_at"] <= info["finished_at"]
    assert isinstance(info["command"], list)
    assert info["git_commit"] == head
    assert info["git_dirty"] is False
    # resuming keeps the first start and records the new one, and the checkout's state now (edited)
    first = info["started_at"]
    (checkout / "tracked.txt").write_text("v2\n")
    pretrain(load_config(None, TINY), tmp_path / "run", resume=True, console=log_console()[0], show_progress=False)
    again = json.loads((tmp_path / "run" / "run.json").read_text())
    assert again["started_at"] == first
    assert len(again["resumed_at"]) == 1
    assert again["epochs_done"] == 2
    assert again["git_commit"] == head
    assert again["git_dirty"] is True


def test_version_flag(cli):
    import mimcli

    code, out, _ = cli("--version")
    assert code == 0
    assert out.strip() == f"mim {mimcli.__version__} (mim-ssl)"


def test_count_progress_is_a_live_bar_on_a_terminal_and_lines_in_a_log(monkeypatch):
    """Extraction and probes: on a terminal the bar shows done/total and the time left; in a log a line every
    `every` units (rate, elapsed, ETA) and one at the end; a job done within quiet_s logs nothing."""
    from mimcli.train.progress import CountProgress

    terminal = Console(file=io.StringIO(), width=120, force_terminal=True)
    with CountProgress(terminal, "cifar10 train features", 10, "batches", live=True, every=3) as bar:
        for _ in range(10):
            bar.advance()
    shown = terminal.file.getvalue()
    assert "cifar10 train features" in shown
    assert "10/10" in shown
    assert "ETA" in shown
    log, buffer = log_console()
    with CountProgress(log, "probing dtd", 10, "epochs", live=True, every=3) as bar:
        for _ in range(10):
            bar.advance()
    assert buffer.getvalue() == ""  # done within quiet_s
    monkeypatch.setattr(CountProgress, "quiet_s", 0.0)
    log, buffer = log_console()
    with CountProgress(log, "probing dtd", 10, "epochs", live=True, every=3) as bar:
        for _ in range(10):
            bar.advance()
    lines = buffer.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["3/10", "6/10", "9/10", "10/10"]
    assert all("epochs/s" in line and "ETA" in line for line in lines)


def test_run_json_records_the_thread_count_a_study_pinned(tmp_path):
    # CPU results depend on the thread count (sums split over threads add up in another order), so run.json
    # says which one trained: the pinned train.threads, not the machine's default
    import torch

    before = torch.get_num_threads()
    try:
        pretrain(
            load_config(None, [*TINY, "train.epochs=1", "train.threads=1"]),
            tmp_path / "run",
            console=log_console()[0],
            show_progress=False,
        )
    finally:
        torch.set_num_threads(before)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["threads"] == 1
