"""mim never loses a user's files, never prints a traceback, and its numbers do not depend on the CPU.

The error cases are one table: command, expected exit code, a fragment of the one-line message, and
the files that must be byte-for-byte unchanged afterwards. Adding a case is one line. docs/reliability.md
says which promise each test proves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mimcli import lock, runs, train
from mimcli.config import load_config
from mimcli.errors import UsageError
from mimcli.models.resnet import build_backbone
from mimcli.objectives.contrastive import barlow_twins_loss, byol_loss, nt_xent
from mimcli.objectives.information import lbe_bound, reconstruction_loss
from mimcli.objectives.precision import promote
from tests.conftest import TINY, TINY_KEYS, quiet

RUN_KEYS = [*TINY_KEYS, "run.name=run"]
RUN_FILES = [runs.CONFIG, runs.METRICS, runs.CHECKPOINT, runs.BACKBONE, runs.STATUS]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One finished tiny run, copied into every case's folder as run/."""
    run_dir = tmp_path_factory.mktemp("template") / "run"
    train.pretrain(load_config(None, RUN_KEYS), run_dir, console=quiet(), show_progress=False)
    return run_dir


# ---- what each case does to its folder before the command ------------------------------------------


def precious(root: Path) -> None:
    (root / "precious").mkdir()
    (root / "precious" / "t.txt").write_text("x\n")


def foreign_file_in_run(root: Path) -> None:
    (root / "run" / "notes.txt").write_text("my thesis notes\n")


def a_file(root: Path) -> None:
    (root / "file.txt").write_text("not a folder\n")


def empty(name: str) -> Callable[[Path], None]:
    return lambda root: (root / "run" / name).write_bytes(b"")


def not_utf8(name: str) -> Callable[[Path], None]:
    return lambda root: (root / "run" / name).write_bytes(b"\xff\xfe\x00garbage\x80")


def wider_backbone(root: Path) -> None:
    torch.save(build_backbone("resnet18", 16, 32).state_dict(), root / "run" / runs.BACKBONE)


def locked_by_a_live_process(root: Path) -> None:
    """The lock a running `mim pretrain` holds (this test process stands in for it: it is alive)."""
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": lock._process_start(os.getpid()),
        "time": "earlier",
    }
    lock.lock_path(root / "run").write_text(json.dumps(holder))


def plots_dir(root: Path) -> None:
    (root / "plots").mkdir()


@dataclass
class Case:
    args: list[str]
    code: int
    message: str
    unchanged: tuple[str, ...] = ()
    setup: Callable[[Path], None] | None = None


T = [*TINY]
RUN = tuple(f"run/{name}" for name in RUN_FILES)
CASES = {
    # --force replaces only a mim run, and only after config, data and model were built
    "force-non-run": Case(
        ["pretrain", *T, "--out", "{tmp}/precious", "--force"],
        2,
        "replaces only a mim run",
        ("precious/t.txt",),
        precious,
    ),
    "force-cwd": Case(["pretrain", *T, "--out", "{tmp}", "--force"], 2, "replaces only a mim run", RUN),
    "force-foreign-file": Case(
        ["pretrain", *T, "--out", "{tmp}/run", "--force"], 2, "notes.txt", (*RUN, "run/notes.txt"), foreign_file_in_run
    ),
    "force-data-typo": Case(
        [
            "pretrain",
            *T,
            "--out",
            "{tmp}/run",
            "--force",
            "--set",
            "data.dataset=cifar10",
            "--set",
            "data.root='{tmp}/typo'",
            "--set",
            "data.download=false",
        ],
        2,
        "not found",
        RUN,
    ),
    "no-flag-existing": Case(["pretrain", *T, "--out", "{tmp}/run"], 2, "--resume", RUN),
    "locked": Case(
        ["pretrain", *T, "--out", "{tmp}/run", "--force"],
        2,
        f"in use by pid {os.getpid()}",
        RUN,
        locked_by_a_live_process,
    ),
    # names that would leave the output folder
    "empty-run-name": Case(["pretrain", *T, "--set", "run.name=''", "--force"], 2, "plain folder name"),
    "dotdot-run-name": Case(["pretrain", *T, "--set", "run.name='..'", "--force"], 2, "plain folder name"),
    "slash-run-name": Case(["pretrain", *T, "--set", "run.name='a/b'"], 2, "plain folder name"),
    "sweep-name": Case(
        ["sweep", "seeds", "-p", "simclr", "--values", "1", "--name", "../x", "--out", "{tmp}", "--dry-run"],
        2,
        "plain folder name",
    ),
    # --resume trains the recipe that produced the weights
    "resume-other-lr": Case(
        ["pretrain", *T, "--out", "{tmp}/run", "--resume", "--set", "train.lr=0.1", "--set", "train.seed=7"],
        2,
        "train.lr 0.0003 there, 0.1 planned; train.seed",
        RUN,
    ),
    "resume-other-preset": Case(
        ["pretrain", "--preset", "cpu-tiny", *T, "--out", "{tmp}/run", "--resume"], 2, "differs in", RUN
    ),
    # non-finite numbers
    "lambda-inf": Case(
        ["pretrain", *T, "--set", "regularizer.kind=rc", "--set", "regularizer.lambda=inf"],
        2,
        "regularizer.lambda: Input should be a finite number",
    ),
    "lr-nan": Case(["pretrain", *T, "--set", "train.lr=nan"], 2, "train.lr: Input should be a finite number"),
    "sweep-inf": Case(
        ["sweep", "lambda", "-p", "simclr-rc", "--values", "0.1,inf", "--out", "{tmp}", "--dry-run"],
        2,
        "'inf' is not a finite number",
    ),
    # paths that cannot be written
    "out-is-file": Case(["pretrain", *T, "--out", "{tmp}/file.txt"], 2, "is a file", ("file.txt",), a_file),
    "out-under-file": Case(
        ["pretrain", *T, "--out", "{tmp}/file.txt/run"], 2, "file.txt is a file, not a folder", ("file.txt",), a_file
    ),
    "sweep-out-file": Case(
        ["sweep", "seeds", "-p", "simclr", "--values", "1", *T[:-1], "--out", "{tmp}/file.txt"],
        2,
        "Not a directory",
        ("file.txt",),
        a_file,
    ),
    "report-out-dir": Case(["report", "{tmp}/run", "--out", "{tmp}/plots"], 2, "is a directory", RUN, plots_dir),
    "report-plots-file": Case(
        ["report", "{tmp}/run", "--plots", "{tmp}/file.txt"], 2, "not a folder", ("file.txt", *RUN), a_file
    ),
    "probe-out-under-file": Case(["probe", "{tmp}/file.txt/run"], 2, "not a run directory", ("file.txt",), a_file),
    # untrusted files in a run directory
    "empty-backbone": Case(
        ["probe", "{tmp}/run", "--datasets", "shapes:shape"],
        2,
        "cannot load",
        ("run/config.toml",),
        empty(runs.BACKBONE),
    ),
    "empty-checkpoint": Case(
        ["pretrain", *T, "--out", "{tmp}/run", "--resume"],
        2,
        "cannot resume",
        ("run/config.toml", "run/backbone.pt"),
        empty(runs.CHECKPOINT),
    ),
    "wrong-shapes": Case(
        ["probe", "{tmp}/run", "--datasets", "shapes:shape"],
        2,
        "size mismatch",
        ("run/config.toml", "run/backbone.pt"),
        wider_backbone,
    ),
    "config-not-utf8": Case(["probe", "{tmp}/run"], 2, "cannot read", ("run/config.toml",), not_utf8(runs.CONFIG)),
    "resume-config-not-utf8": Case(
        ["pretrain", *T, "--out", "{tmp}/run", "--resume"], 2, "cannot read", RUN, not_utf8(runs.CONFIG)
    ),
    # what is wrong, said plainly
    "supervised-batch-1": Case(
        ["supervised", *T, "--set", "train.batch_size=1", "--out", "{tmp}/new"], 2, "batch norm needs at least 2 images"
    ),
}


def digests(root: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in names}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(name, cli, template, tmp_path, monkeypatch):
    case = CASES[name]
    shutil.copytree(template, tmp_path / "run")
    if case.setup:
        case.setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = digests(tmp_path, case.unchanged)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in case.args]
    code, out, err = cli(*args)
    assert code == case.code, (out, err)
    assert case.message in " ".join(err.split()), err
    assert "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1, err  # one line (rich may wrap it on a narrow terminal: soft_wrap)
    assert digests(tmp_path, case.unchanged) == before
    assert not (tmp_path / "new").exists()  # a refused run leaves no folder behind


# ---- errors that need a monkeypatch: the OS refusing a write, Ctrl-C, a loss that diverges -------------


def test_an_unwritable_folder_is_one_line_exit_2(cli, template, tmp_path, monkeypatch):
    """We run as root, where chmod does not stop writes: make the write itself fail as it would."""
    shutil.copytree(template, tmp_path / "run")

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(runs, "atomic_write_bytes", refuse)
    code, out, err = cli("probe", str(tmp_path / "run"), "--datasets", "shapes:shape", "--protocol", "knn")
    assert code == 2 and "Permission denied" in err and "Traceback" not in out + err, err


def test_ctrl_c_keeps_finished_epochs_and_says_how_to_continue(cli, tmp_path, monkeypatch):
    original = train.Trainer.train_epoch

    def interrupted_in_epoch_2(self, *args):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(train.Trainer, "train_epoch", interrupted_in_epoch_2)
    code, out, err = cli("pretrain", *TINY, "--set", "train.epochs=2", "--out", str(tmp_path / "run"))
    assert code == 130 and "finished epochs are saved; continue with --resume" in err, err
    assert torch.load(tmp_path / "run" / runs.CHECKPOINT, weights_only=True)["epoch"] == 1
    assert "Traceback" not in out + err


def test_a_diverged_loss_stops_and_keeps_the_last_good_checkpoint(cli, tmp_path, monkeypatch):
    original = train.Trainer.train_epoch
    saved: dict[str, str] = {}

    def nan_in_epoch_2(self, *args):
        if self.epoch == 1:
            saved.update(digests(tmp_path, RUN))
            step = self.step_fn
            self.step_fn = lambda batch: {k: v * float("nan") for k, v in step(batch).items()}
        return original(self, *args)

    monkeypatch.setattr(train.Trainer, "train_epoch", nan_in_epoch_2)
    code, out, err = cli("pretrain", *TINY, "--set", "train.epochs=2", "--out", str(tmp_path / "run"))
    assert code == 2 and "training diverged: loss" in err and "still holds epoch 1" in err, err
    assert digests(tmp_path, RUN) == saved  # checkpoint, backbone, metrics, run.json: epoch 1's, untouched
    assert "Traceback" not in out + err


def test_a_second_process_on_the_same_run_dir_exits_2_naming_the_holder(tmp_path):
    held = lock.PointLock(lock.lock_path(tmp_path / "run"))
    assert held.acquire()
    try:
        expected = f"in use by pid {os.getpid()} on {socket.gethostname()}"
        with pytest.raises(UsageError, match=expected), lock.run_lock(tmp_path / "run"):
            pass
    finally:
        held.release()
    with lock.run_lock(tmp_path / "run"):  # released: free again
        assert lock.lock_path(tmp_path / "run").is_file()
    assert not lock.lock_path(tmp_path / "run").exists()


def test_force_replaces_a_run_only_once_the_new_one_starts(cli, template, tmp_path):
    """A real replacement: the old run's files are gone, the new run's are complete, nothing else touched."""
    shutil.copytree(template, tmp_path / "run")
    (tmp_path / "beside.txt").write_text("keep\n")
    code, _, err = cli("pretrain", *TINY, "--set", "train.seed=3", "--out", str(tmp_path / "run"), "--force")
    assert code == 0, err
    assert runs.load_run_config(tmp_path / "run").train.seed == 3
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(RUN_FILES)
    assert (tmp_path / "beside.txt").read_text() == "keep\n"


def test_resume_may_extend_epochs_and_keeps_the_recipe(cli, template, tmp_path):
    shutil.copytree(template, tmp_path / "run")
    safe = ["train.epochs=2", "train.print_every=1", "train.diagnostics_every=0", "data.workers=0"]
    code, _, err = cli(
        "pretrain",
        "--out",
        str(tmp_path / "run"),
        "--resume",
        "--no-progress",
        *[arg for key in safe for arg in ("--set", key)],
    )
    assert code == 0, err
    stored = runs.load_run_config(tmp_path / "run")
    assert stored.train.epochs == 2
    assert stored.model_dump() == load_config(None, [*RUN_KEYS, *safe]).model_dump()


def test_report_skips_a_broken_run_and_reports_the_rest(cli, tmp_path):
    from mimcli.probe import run_probes

    good = tmp_path / "runs" / "good"
    train.pretrain(load_config(None, RUN_KEYS), good, console=quiet(), show_progress=False)
    run_probes(good, datasets=["shapes:shape"], protocol="knn", device="cpu", console=quiet())
    for name, damage in (("bad-config", runs.CONFIG), ("bad-status", runs.STATUS), ("bad-probe", runs.PROBE)):
        shutil.copytree(good, tmp_path / "runs" / name)
        (tmp_path / "runs" / name / damage).write_bytes(b"\xff\xfe\x80 not utf-8")
    code, out, err = cli("report", str(tmp_path / "runs"), "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert "good" in json.dumps(rows) and "bad-" not in json.dumps(rows)
    for name in ("bad-config", "bad-status", "bad-probe"):
        assert name in err
    assert "Traceback" not in out + err


# ---- feature cache integrity: the data itself is checksummed ---------------------------------------------


def flip_bytes_in_data(path: Path, dataset: str = "layer4") -> None:
    """Flip bytes in the middle of a dataset's first stored chunk (its data, not the file's structure)."""
    with h5py.File(path, "r") as handle:
        info = handle[dataset].id.get_chunk_info(0)
    with path.open("r+b") as raw:
        raw.seek(info.byte_offset + info.size // 2)
        chunk = bytearray(raw.read(8))
        raw.seek(info.byte_offset + info.size // 2)
        raw.write(bytes(b ^ 0x5A for b in chunk))


def test_flipped_bytes_in_cached_features_are_detected_and_rebuilt(template, tmp_path):
    from mimcli.probe import run_probes

    run_dir = tmp_path / "run"
    shutil.copytree(template, run_dir)
    first = run_probes(run_dir, datasets=["shapes:shape"], protocol="linear", device="cpu", console=quiet())
    files = sorted((run_dir / "features").glob("*.h5"))
    assert len(files) == 2
    for path in files:
        flip_bytes_in_data(path)
    console = quiet()
    second = run_probes(run_dir, datasets=["shapes:shape"], protocol="linear", device="cpu", console=console)
    said = console.file.getvalue()
    assert said.count("rebuilding") == 2 and "unreadable" in said, said
    assert second["results"][0]["metrics"] == first["results"][0]["metrics"]


# ---- precision: no test's outcome depends on the CPU ------------------------------------------------------


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_precision_auto_follows_the_cpu_and_both_branches_train(monkeypatch, tmp_path, fast_bf16):
    """Force both answers of cpu_has_fast_bf16 (Intel AMX/AVX512-BF16 and AMD without), whatever this CPU is."""
    from mimcli.data.shapes import generate_shapes
    from mimcli.objectives import precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast_bf16)
    cpu = torch.device("cpu")
    assert precision.resolve_precision("auto", cpu) == (torch.bfloat16 if fast_bf16 else None)
    assert precision.resolve_precision("fp32", cpu) is None
    assert precision.resolve_precision("bf16", cpu) == torch.bfloat16
    config = load_config(None, [*RUN_KEYS, "train.precision=auto", "method.name=barlow", "regularizer.kind=lbe"])
    trainer = train.Trainer(config, tmp_path, data=generate_shapes(64, seed=0))
    assert trainer.autocast_dtype == (torch.bfloat16 if fast_bf16 else None)
    result = trainer.train_epoch(None)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.terms.values())


def test_losses_compute_in_at_least_fp32_and_keep_float64():
    """`.float()` used to turn the exact-equality tests' float64 into float32, whose GEMM rounding
    depends on the CPU's kernels and thread count (the DDP test failed on AMX CPUs with 2 threads)."""
    assert promote(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert promote(torch.ones(2, dtype=torch.float64)).dtype == torch.float64
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(8, 5, generator=generator, dtype=torch.float64) for _ in range(2))
    for loss in (
        barlow_twins_loss(a, b),
        nt_xent(a, b),
        byol_loss(a, b),
        lbe_bound(a, b),
        reconstruction_loss(torch.cat([a, b]), torch.cat([b, a]), 2),
    ):
        assert loss.dtype == torch.float64


def test_cli_tests_pin_precision():
    """Shared CLI arguments pin fp32, so a CLI test trains the same way on every CPU."""
    assert "train.precision=fp32" in TINY and "train.precision=fp32" in RUN_KEYS


def test_an_adjusted_value_is_said_recorded_and_resumable(cli, tmp_path):
    """A batch larger than the data (and a subset larger than it) is used as what fits: one line says so,
    config.toml holds the value used, run.json what was asked; the same command line resumes the run."""
    run = tmp_path / "run"
    args = [*TINY, "--set", "train.batch_size=1000000000", "--set", "data.subset=100000", "--out", str(run)]
    code, out, err = cli("pretrain", *args)
    assert code == 0, err
    assert "note: train.batch_size=1000000000 adjusted to 64: a batch cannot hold more than the 64" in out
    assert "note: data.subset=100000 adjusted to 64: there are only 64 training images" in out
    stored = runs.load_run_config(run)
    assert (stored.train.batch_size, stored.data.subset) == (64, 64)
    adjusted = runs.read_json(run / runs.STATUS)["adjusted"]
    assert adjusted["train.batch_size"]["requested"] == 1000000000 and adjusted["train.batch_size"]["used"] == 64
    code, out, err = cli("pretrain", *args, "--set", "train.epochs=2", "--resume")
    assert code == 0, err
    assert runs.read_json(run / runs.STATUS)["epochs_done"] == 2
    assert runs.read_json(run / runs.STATUS)["adjusted"] == adjusted


def test_more_decoding_processes_than_cpus_are_adjusted(monkeypatch):
    """Streamed images (an ImageIndex) are decoded by data.workers processes: at most one per usable CPU."""
    from mimcli.data.index import ImageIndex

    monkeypatch.setattr(train, "usable_cpus", lambda: 2)
    config = load_config(None, [*TINY_KEYS, "data.workers=8"])
    index = ImageIndex(np.array([b"a.png"] * 64), torch.zeros(64, dtype=torch.long), ["a"])
    changes = train.adjustments(config, index, 32, 1)
    assert list(changes) == ["data.workers"] and (
        changes["data.workers"]["used"],
        changes["data.workers"]["requested"],
    ) == (2, 8)
    assert "2 CPUs" in changes["data.workers"]["why"]
    assert train.adjustments(load_config(None, [*TINY_KEYS, "data.workers=2"]), index, 32, 1) == {}
