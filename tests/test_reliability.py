"""mim never loses a user's files, never prints a traceback, and its numbers do not depend on the CPU.

The error cases are one table: command, expected exit code, a fragment of the one-line message, and
the files that must be byte-for-byte unchanged afterwards. Adding a case is one line. docs/reliability.md
says which promise each test proves.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mimcli.config import load_config, read_toml, to_toml
from mimcli.errors import UsageError
from mimcli.models.resnet import build_backbone
from mimcli.objectives.contrastive import barlow_twins_loss, byol_loss, nt_xent
from mimcli.objectives.information import lbe_bound, reconstruction_loss
from mimcli.objectives.precision import promote
from mimcli.report.collect import find_run_dirs
from mimcli.rundir import lock, runs
from mimcli.train import loop as train
from tests.tiny import TINY, TINY_KEYS

RUN_KEYS = [*TINY_KEYS, "run.name=run"]
RUN_FILES = [runs.CONFIG, runs.METRICS, runs.CHECKPOINT, runs.BACKBONE, runs.STATUS, runs.REQUIREMENTS]


@pytest.fixture(scope="module")
def template(tmp_path_factory, quiet) -> Path:
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


MARKER = "imported"  # the file a plugin writes when imported: a reader must never create it


def marker_plugin(path: Path, root: Path) -> None:
    """A plugin file that leaves root/imported behind when anything imports it."""
    path.write_text(f"from pathlib import Path\nPath({str(root / MARKER)!r}).write_text('ran')\n")


def edit_config(root: Path, **sections: dict[str, object]) -> None:
    """Change keys of run/config.toml as a hand (or a colleague's mim) would."""
    raw = read_toml(root / "run" / runs.CONFIG)
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    (root / "run" / runs.CONFIG).write_text(to_toml(raw))


def plugin_in_run(root: Path) -> None:
    """A received run whose config.toml names a plugin file that sits in the run (a relative path)."""
    marker_plugin(root / "run" / "evil.py", root)
    edit_config(root, run={"plugins": ["evil.py"]})


def plugin_in_preset(root: Path) -> None:
    """A downloaded preset naming the plugin file beside it."""
    marker_plugin(root / "evil.py", root)
    (root / "preset.toml").write_text('[run]\nplugins = ["evil.py"]\n')


def plugin_file(name: str, body: str) -> Callable[[Path], None]:
    return lambda root: (root / name).write_text(body)


def mid_epoch_checkpoint(root: Path) -> None:
    """checkpoint.pt as a train.checkpoint_steps save leaves it: 0 epochs and 1 step of epoch 1."""
    state = torch.load(root / "run" / runs.CHECKPOINT, weights_only=True)
    torch.save({**state, "epoch": 0, "step": 1}, root / "run" / runs.CHECKPOINT)


def symlink_to_a_locked_run(root: Path) -> None:
    locked_by_a_live_process(root)
    (root / "link").symlink_to(root / "run")


def image_folder(bad_name: str, bad: bytes) -> Callable[[Path], None]:
    """images/<a|b>/: 8 good JPEGs and one bad file, read whole by one epoch of batch 3 (3 steps of 3)."""

    def setup(root: Path) -> None:
        from tests.data.test_stream import write_jpegs

        write_jpegs(root / "images" / "a", 4, seed=1)
        write_jpegs(root / "images" / "b", 4, seed=2)
        (root / "images" / "b" / bad_name).write_bytes(bad)

    return setup


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def jpeg_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


# Bad images, one per kind of decoder error: an OSError, an error that is not one, PIL's own type
BAD_IMAGES = {
    "truncated-jpeg": ("cut.jpg", jpeg_bytes()[:200], "Truncated File Read"),
    "decompression-bomb": (
        "bomb.png",
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
        + png_chunk(b"IEND", b""),
        "Image size (1600000000 pixels) exceeds limit",
    ),
    "not-an-image": ("notes.png", b"my notes, not an image\n", "cannot identify image file"),
}
IMAGES = [
    "--set",
    "data.dataset=imagefolder",
    "--set",
    "data.root='{tmp}/images'",
    "--set",
    "data.image_size=16",
    "--set",
    "train.batch_size=3",
]
LOADERS = {  # how each mode reads the folder: decoded whole, by a DataLoader worker, packed
    "memory": ["pretrain", *TINY, *IMAGES, "--set", "data.loader=memory", "--out", "{tmp}/new"],
    "stream-worker": [
        "pretrain",
        *TINY,
        *IMAGES,
        "--set",
        "data.loader=stream",
        "--set",
        "data.workers=1",
        "--out",
        "{tmp}/streamed",  # found mid-epoch: the run has started (config.toml, run.json), nothing trained is lost
    ],
    "pack": ["pack", "{tmp}/images", "{tmp}/new"],
}


def pack_without(dataset: str) -> Callable[[Path], None]:
    """A pack of a good folder with one of its data sets deleted."""

    def setup(root: Path) -> None:
        from mimcli.data.packing import pack_folder
        from tests.data.test_stream import write_jpegs

        write_jpegs(root / "images" / "a", 4, seed=1)
        write_jpegs(root / "images" / "b", 4, seed=2)
        pack_folder(root / "images", root / "pack.h5")
        with h5py.File(root / "pack.h5", "r+") as handle:
            del handle[f"train/{dataset}"]

    return setup


def user_file(name: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / name).write_text(text)


def no_free_space(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """A full disk, as shutil.disk_usage reports it (the free-space check runs before every large write)."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))


def torch_save_fails(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """torch.save writes half the file, then fails as its zip writer does when the disk fills up."""

    def half_then_fail(obj, path):
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(runs.torch, "save", half_then_fail)


@dataclass
class Case:
    args: list[str]
    code: int
    message: str
    unchanged: tuple[str, ...] = ()
    setup: Callable[[Path], None] | None = None
    absent: tuple[str, ...] = ()  # files that must not exist afterwards (a plugin's marker)
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None  # what the OS does (a full disk)


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
    # a plugin is imported only by a command that trains, and a file a preset or a run names only when trusted
    "plugin-in-preset-untrusted": Case(
        ["pretrain", "-p", "{tmp}/preset.toml", *T, "--out", "{tmp}/new"],
        2,
        "only with --trust-plugins",
        absent=(MARKER,),
        setup=plugin_in_preset,
    ),
    "plugin-in-run-untrusted-resume": Case(
        ["pretrain", *T, "--out", "{tmp}/run", "--resume"],
        2,
        "only with --trust-plugins",
        RUN,
        plugin_in_run,
        absent=(MARKER,),
    ),
    "sweep-plugin-untrusted": Case(
        ["sweep", "seeds", "-p", "{tmp}/preset.toml", "--values", "1", *T[:-1], "--out", "{tmp}/new"],
        2,
        "only with --trust-plugins",
        absent=(MARKER,),
        setup=plugin_in_preset,
    ),
    "plugin-bare-name": Case(
        ["pretrain", *T, "--set", "run.plugins=['this']", "--out", "{tmp}/new"], 2, "'mim.plugins' entry point"
    ),
    "plugin-exits": Case(
        ["pretrain", *T, "--set", "run.plugins=['{tmp}/exits.py']", "--out", "{tmp}/new"],
        2,
        "cannot load {tmp}/exits.py: SystemExit: 0",
        setup=plugin_file("exits.py", "import sys\nsys.exit(0)\n"),
    ),
    "plugin-raises": Case(
        ["pretrain", *T, "--set", "run.plugins=['{tmp}/raises.py']", "--out", "{tmp}/new"],
        2,
        "RuntimeError: boom",
        setup=plugin_file("raises.py", "raise RuntimeError('boom')\n"),
    ),
    # the record is the truth: no resume may make config.toml, run.json or metrics.jsonl contradict the weights
    "resume-fewer-epochs": Case(
        ["pretrain", *T, "--set", "train.epochs=0", "--out", "{tmp}/run", "--resume"],
        2,
        "train.epochs=0, but checkpoint.pt already holds 1 epoch",
        RUN,
    ),
    "resume-fewer-epochs-mid-epoch": Case(
        ["pretrain", *T, "--set", "train.epochs=0", "--out", "{tmp}/run", "--resume"],
        2,
        "already holds 0 epochs and 1 steps of epoch 1",
        RUN,
        mid_epoch_checkpoint,
    ),
    "resume-save-a-passed-epoch": Case(
        ["pretrain", *T, "--set", "train.epochs=2", "--set", "train.save_epochs=[1]", "--out", "{tmp}/run", "--resume"],
        2,
        "adds train.save_epochs 1",
        RUN,
    ),
    "resume-hand-edited-lr": Case(
        ["pretrain", "--out", "{tmp}/run", "--resume", "--no-progress"],
        2,
        "config.toml was changed after checkpoint.pt was written (train.lr 0.1 in config.toml, 0.0003 in",
        RUN,
        lambda root: edit_config(root, train={"lr": 0.1}),
    ),
    "resume-hand-edited-method": Case(
        ["pretrain", "--out", "{tmp}/run", "--resume", "--no-progress"],
        2,
        "method.temperature 0.9 in config.toml, 0.5 in checkpoint.pt",
        RUN,
        lambda root: edit_config(root, method={"temperature": 0.9}),
    ),
    # one lock per run, whatever path names it
    "locked-through-symlink": Case(
        ["pretrain", *T, "--out", "{tmp}/link", "--resume"],
        2,
        f"in use by pid {os.getpid()}",
        RUN,
        symlink_to_a_locked_run,
    ),
    # what is wrong, said plainly
    "supervised-batch-1": Case(
        ["supervised", *T, "--set", "train.batch_size=1", "--out", "{tmp}/new"], 2, "batch norm needs at least 2 images"
    ),
    # numbers beyond what the parser, Python's int() or a 64-bit integer can hold
    "set-int-digits": Case(["pretrain", *T, "--set", "train.lr=" + "1" * 5000], 2, "--set train.lr=11111"),
    "set-deep-nesting": Case(
        ["pretrain", *T, "--set", "train.lr=" + "[" * 3000 + "]" * 3000], 2, "cannot read the value (maximum recursion"
    ),
    "seed-65-bits": Case(["pretrain", *T, "--set", f"train.seed={2**64}"], 2, "train.seed: must fit in 64 bits"),
    "probe-seed-65-bits": Case(
        ["pretrain", *T, "--set", f"probe.seeds=[0, {2**64}]"], 2, "probe.seeds: must fit in 64 bits"
    ),
    "config-int-digits": Case(
        ["probe", "{tmp}/run"],
        2,
        "cannot read",
        ("run/config.toml",),
        user_file("run/config.toml", "[train]\nseed = " + "9" * 5000),
    ),
    # sizes the allocator cannot give (beyond any machine's address space, so no OOM killer is woken)
    "alloc-image-size": Case(
        ["pretrain", *T, "--set", "data.image_size=10000000", "--out", "{tmp}/new"],
        2,
        "out of memory (tried to allocate",
    ),
    "alloc-width": Case(
        ["pretrain", *T, "--set", "model.width=10000000", "--out", "{tmp}/new"], 2, "out of memory (tried to allocate"
    ),
    # a pack missing one of its data sets
    **{
        f"pack-without-{dataset}": Case(
            [
                "pretrain",
                *T,
                "--set",
                "data.dataset=imagefolder",
                "--set",
                "data.root='{tmp}/pack.h5'",
                "--out",
                "{tmp}/new",
            ],
            2,
            f"pack.h5 has no data set train/{dataset}",
            ("pack.h5",),
            pack_without(dataset),
        )
        for dataset in ("data", "offsets", "labels")
    },
    # a full disk: refused before writing (HDF5 would crash the process), or a write that fails part-way
    "disk-full-checkpoint": Case(
        ["pretrain", *T, "--set", "train.epochs=2", "--out", "{tmp}/run", "--resume"],
        2,
        "checkpoint.pt: No space left on device",
        ("run/checkpoint.pt", "run/backbone.pt", "run/metrics.jsonl"),
        patch=no_free_space,
    ),
    "disk-full-probe-features": Case(
        ["probe", "{tmp}/run", "--datasets", "shapes:shape", "--protocol", "knn"],
        2,
        ".h5: No space left on device",
        RUN,
        patch=no_free_space,
    ),
    "disk-full-pack": Case(
        LOADERS["pack"], 2, "new: No space left on device", setup=image_folder("x.png", b""), patch=no_free_space
    ),
    "checkpoint-write-fails": Case(
        ["pretrain", *T, "--set", "train.epochs=2", "--out", "{tmp}/run", "--resume"],
        2,
        "checkpoint.pt: cannot write it ([enforce fail",
        ("run/checkpoint.pt", "run/backbone.pt"),
        patch=torch_save_fails,
    ),
    # a file the user wrote is not a report to overwrite
    "report-out-user-file": Case(
        ["report", "{tmp}/run", "--format", "markdown", "--out", "{tmp}/notes.md"],
        2,
        "notes.md exists and is not a markdown report mim wrote",
        ("notes.md", *RUN),
        user_file("notes.md", "# my notes\n"),
    ),
    # any decoder error, in every mode that reads images (the one in a DataLoader worker included)
    **{
        f"bad-image-{kind}-{mode}": Case(
            args,
            2,
            f"cannot decode image {{tmp}}/images/b/{name}: {fragment}",
            (f"images/b/{name}",),
            image_folder(name, data),
        )
        for kind, (name, data, fragment) in BAD_IMAGES.items()
        for mode, args in LOADERS.items()
    },
}


def digests(root: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in names}


SLOW_CASES = {"alloc-width"}  # about 13 s on a quiet machine, the rest well under one


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_CASES else name for name in CASES]
)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(name, cli, template, tmp_path, monkeypatch):
    case = CASES[name]
    shutil.copytree(template, tmp_path / "run")
    if case.setup:
        case.setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = digests(tmp_path, case.unchanged)
    if case.patch:
        case.patch(monkeypatch, tmp_path)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in case.args]
    code, out, err = cli(*args)
    assert code == case.code, (out, err)
    assert case.message.replace("{tmp}", str(tmp_path)) in " ".join(err.split()), err
    assert "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1, err  # one line (rich may wrap it on a narrow terminal: soft_wrap)
    assert digests(tmp_path, case.unchanged) == before
    assert not (tmp_path / "new").exists()  # a refused run leaves no folder behind
    assert not [name for name in case.absent if (tmp_path / name).exists()]
    assert not [p for p in tmp_path.rglob("*.tmp")]  # nor a temporary file


# ---- errors that need a monkeypatch: the OS refusing a write, Ctrl-C, a loss that diverges -------------


def test_an_unwritable_folder_is_one_line_exit_2(cli, template, tmp_path, monkeypatch):
    """We run as root, where chmod does not stop writes: make the write itself fail as it would."""
    shutil.copytree(template, tmp_path / "run")

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(runs, "atomic_write_bytes", refuse)
    code, out, err = cli("probe", str(tmp_path / "run"), "--datasets", "shapes:shape", "--protocol", "knn")
    assert code == 2, err
    assert "Permission denied" in err, err
    assert "Traceback" not in out + err, err


def test_ctrl_c_keeps_finished_epochs_and_says_how_to_continue(cli, tmp_path, monkeypatch):
    original = train.Trainer.train_epoch

    def interrupted_in_epoch_2(self, *args):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(train.Trainer, "train_epoch", interrupted_in_epoch_2)
    code, out, err = cli("pretrain", *TINY, "--set", "train.epochs=2", "--out", str(tmp_path / "run"))
    assert code == 130, err
    kept = f"{tmp_path / 'run' / runs.CHECKPOINT} holds epoch 1; continue with --resume"
    assert " ".join(err.split()) == f"stopped by SIGINT: {kept}", err
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
    assert code == 2, err
    assert "training diverged: loss" in err, err
    assert "still holds epoch 1" in err, err
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


def test_the_lock_is_keyed_on_the_real_path(tmp_path):
    """A symlink to the run, or to a folder above it, names the same lock as the run's own path."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "link-to-run").symlink_to(tmp_path / "runs" / "run")  # dangling until the run exists: still one
    (tmp_path / "link-to-runs").symlink_to(tmp_path / "runs")
    with lock.run_lock(tmp_path / "runs" / "run"):
        for other in (tmp_path / "link-to-run", tmp_path / "link-to-runs" / "run"):
            with pytest.raises(UsageError, match="in use by pid"), lock.run_lock(other):
                pass
    assert lock.lock_path(tmp_path / "link-to-runs" / "run") == tmp_path.resolve() / "runs" / "run.lock"


def test_two_probes_of_one_run_both_keep_their_results(template, tmp_path, monkeypatch, quiet):
    """The interleaving that lost a result: probe B runs from start to end while probe A is computing, then
    A writes. A re-reads probe.json under the run's lock before it writes, so B's record stays."""
    from mimcli.probe import run as probe_run

    shutil.copytree(template, tmp_path / "run")
    original = probe_run.probe_dataset
    inner: list[dict[str, object]] = []

    def b_finishes_while_a_computes(dataset, *args, **kwargs):
        record = original(dataset, *args, **kwargs)
        if dataset.name == "shapes:shape" and not inner:  # A's data set: B probes another one meanwhile
            inner.append(probe_run.run_probes(tmp_path / "run", datasets=["shapes:hue"], **common))
        return record

    common = {"protocol": "knn", "device": "cpu", "console": quiet()}
    monkeypatch.setattr(probe_run, "probe_dataset", b_finishes_while_a_computes)
    outer = probe_run.run_probes(tmp_path / "run", datasets=["shapes:shape"], **common)
    saved = runs.read_json(tmp_path / "run" / runs.PROBE)["results"]
    assert [r["dataset"] for r in saved] == ["shapes:hue", "shapes:shape"]
    assert saved == outer["results"]  # what A returns is what the file holds
    assert saved[0] == inner[0]["results"][0]  # B's record as B computed it


def test_the_probe_lock_excludes_another_process_until_it_lets_go(tmp_path):
    """folder_lock across real processes: a second holder waits until the first one releases it (or dies)."""
    import fcntl
    import subprocess
    import sys

    (tmp_path / "run").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "run")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from mimcli.rundir.lock import folder_lock\n"
            f"with folder_lock({str(tmp_path / 'link')!r}):\n    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        fd = os.open(tmp_path / "run", os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):  # the same folder through its real path: taken
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder.communicate("", timeout=60)  # the holder lets go and exits
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
        finally:
            os.close(fd)
    finally:
        holder.kill()


def test_a_received_runs_folder_is_read_without_importing_its_plugins(cli, template, tmp_path, monkeypatch, quiet):
    """Report, probe and a sweep's dry run read a colleague's runs and preset: their plugin files never run,
    and a run whose method nobody registered here is reported under the label its run.json recorded."""
    from mimcli.probe import run_probes

    run = tmp_path / "received" / "run"
    shutil.copytree(template, run)
    run_probes(run, datasets=["shapes:shape"], protocol="knn", device="cpu", console=quiet())
    plugin_in_run(tmp_path / "received")
    edit_config(tmp_path / "received", method={"name": "colleagues_method", "beta": 0.5})
    status = runs.read_json(run / runs.STATUS)
    runs.write_json(run / runs.STATUS, {**status, "label": "Colleague's Method + RC"})
    plugin_in_preset(tmp_path)
    monkeypatch.chdir(run)  # even from inside the run: a bare name or relative path must not reach evil.py

    code, out, err = cli("report", str(tmp_path / "received"), "--format", "json")
    assert code == 0, err
    assert "Colleague's Method + RC" in json.dumps(json.loads(out))
    code, out, err = cli("probe", str(run), "--datasets", "shapes:hue", "--protocol", "knn")
    assert code == 0, err
    assert {r["dataset"] for r in runs.read_json(run / runs.PROBE)["results"]} == {"shapes:shape", "shapes:hue"}
    code, out, err = cli("sweep", "seeds", "-p", str(tmp_path / "preset.toml"), "--values", "1,2", "--dry-run")
    assert code == 0, err
    assert not (tmp_path / MARKER).exists()


def test_a_symlinked_run_is_reported_once_and_a_link_loop_ends(cli, template, tmp_path, quiet):
    from mimcli.probe import run_probes

    shutil.copytree(template, tmp_path / "elsewhere" / "run")
    run_probes(tmp_path / "elsewhere" / "run", datasets=["shapes:shape"], protocol="knn", device="cpu", console=quiet())
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "linked").symlink_to(tmp_path / "elsewhere" / "run")
    (tmp_path / "results" / "again").symlink_to(tmp_path / "elsewhere" / "run")
    (tmp_path / "results" / "loop").symlink_to(tmp_path / "results")
    code, out, err = cli("report", str(tmp_path / "results"), "--format", "json")
    assert code == 0, err
    assert len(find_run_dirs([tmp_path / "results"])) == 1
    assert "shapes:shape" in out


def test_a_trusted_plugin_file_is_found_beside_the_preset_that_names_it(cli, tmp_path, monkeypatch):
    plugin_in_preset(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    args = ["pretrain", "-p", str(tmp_path / "preset.toml"), *TINY, "--out", str(tmp_path / "run")]
    code, _, err = cli(*args, "--trust-plugins")
    assert code == 0, err
    assert (tmp_path / MARKER).read_text() == "ran"
    assert runs.load_run_config(tmp_path / "run").run.plugins == [str(tmp_path / "evil.py")]


def test_an_installed_entry_point_is_the_only_plugin_named_by_a_bare_name(tmp_path, monkeypatch):
    """A module name is looked up among installed `mim.plugins` entry points, never on sys.path alone."""
    from mimcli.config import load_plugin

    site = tmp_path / "site"
    (site / "mim_ep_plugin").mkdir(parents=True)
    (site / "mim_ep_plugin" / "__init__.py").write_text(
        f"from pathlib import Path\nPath({str(tmp_path / MARKER)!r}).write_text('ran')\n"
    )
    (site / "stray_module.py").write_text("raise AssertionError('imported from sys.path')\n")
    info = site / "mim_ep_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mim-ep-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mim.plugins]\nep-plugin = mim_ep_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(UsageError, match="stray_module: LookupError"):
        load_plugin("stray_module")
    load_plugin("ep-plugin")
    assert (tmp_path / MARKER).read_text() == "ran"


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


def test_report_skips_a_broken_run_and_reports_the_rest(cli, tmp_path, quiet):
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
    assert "good" in json.dumps(rows)
    assert "bad-" not in json.dumps(rows)
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


def test_flipped_bytes_in_cached_features_are_detected_and_rebuilt(template, tmp_path, quiet):
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
    assert said.count("rebuilding") == 2, said
    assert "unreadable" in said, said
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
    trainer = train.build_trainer(config, tmp_path, data=generate_shapes(64, seed=0))
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
    assert "train.precision=fp32" in TINY
    assert "train.precision=fp32" in RUN_KEYS


# ---- any decoder error, any file name ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        OSError("broken data stream"),
        SyntaxError("broken PNG file"),
        ValueError("tile cannot extend outside image"),
        struct.error("unpack requires a buffer of 4 bytes"),
        EOFError(),
        MemoryError(),
        ZeroDivisionError("division by zero"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_any_decoder_error_names_the_file(tmp_path, monkeypatch, error):
    """Whatever a decoder raises on a bad file is one UsageError naming it: in memory mode, stream mode and
    packs (all decode through index.open_rgb) and in `mim pack`'s header check."""
    from PIL import Image

    from mimcli.data import index, packing

    def refuse(*args, **kwargs):
        raise error

    path = tmp_path / "images" / "a" / "x.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(jpeg_bytes())
    monkeypatch.setattr(Image, "open", refuse)
    detail = str(error) or type(error).__name__
    with pytest.raises(UsageError, match=f"^cannot decode image {path}: {re.escape(detail)}$"):
        index.open_rgb(str(path))
    with pytest.raises(UsageError, match=f"^cannot decode image {path}: {re.escape(detail)}$"):
        packing.pack_folder(tmp_path / "images", tmp_path / "images.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


NAMES = {
    "non-ascii": "ünïcødé-猫.jpg".encode(),
    "non-utf8": b"latin1-caf\xe9.jpg",  # what an old Windows or ISO-8859-1 machine wrote
}


@pytest.mark.parametrize("kind", list(NAMES))
def test_any_file_name_trains_in_stream_mode_and_packs(cli, tmp_path, kind):
    """A file name is the file system's bytes: stream mode (with a DataLoader worker) and `mim pack` read any
    name, and the pack keeps it byte for byte."""
    from tests.data.test_stream import write_jpegs

    for label, seed in (("a", 1), ("b", 2)):
        write_jpegs(tmp_path / "images" / label, 4, seed=seed)
    odd = os.fsencode(tmp_path / "images" / "b") + b"/" + NAMES[kind]
    os.rename(os.fsencode(tmp_path / "images" / "b" / "img0000.jpg"), odd)
    stream = [*TINY, *(a.replace("{tmp}", str(tmp_path)) for a in IMAGES), "--set", "train.batch_size=4"]
    stream += ["--set", "data.loader=stream", "--set", "data.workers=1"]
    code, _, err = cli("pretrain", *stream, "--out", str(tmp_path / "streamed"))
    assert code == 0, err
    code, _, err = cli("pack", str(tmp_path / "images"), str(tmp_path / "images.h5"))
    assert code == 0, err
    from mimcli.data.packed import packed_index

    with h5py.File(tmp_path / "images.h5", "r") as handle:
        names = [bytes(name) for name in handle["train/names"][...]]
    row = names.index(b"b/" + NAMES[kind])  # relative to the folder, the file system's own bytes
    with open(odd, "rb") as original:
        assert packed_index(tmp_path / "images.h5", "train").read(row) == original.read()


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
    assert adjusted["train.batch_size"]["requested"] == 1000000000
    assert adjusted["train.batch_size"]["used"] == 64
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
    assert list(changes) == ["data.workers"]
    assert (
        changes["data.workers"]["used"],
        changes["data.workers"]["requested"],
    ) == (2, 8)
    assert "2 CPUs" in changes["data.workers"]["why"]
    assert train.adjustments(load_config(None, [*TINY_KEYS, "data.workers=2"]), index, 32, 1) == {}
