"""Fixtures every test module may ask for by name; nothing imports this file (pytest loads it, and a second
import under another name would be a second copy of it). Plain settings lists are in tests/tiny.py.

- `cli`: run `mim` in-process, get (exit code, stdout, stderr).
- `quiet`: a recording console factory.
- `one_thread`: one intra-op thread for a module of tiny tensors.
- `make_run`, `make_image_folder`: a run directory with a random backbone, a two-class PNG folder.
- `cifar10_jpeg`: a small generated archive in the layout of the CIFAR-10 JPEG archive.
- every test starts from the built-in registries (`restore_registries`, autouse).
"""

from __future__ import annotations

import importlib
import io
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from rich.console import Console

pytest_plugins = ["pytester"]  # test_extending runs two tests in a pytest of their own to see the registries restored

# Module-level dicts that code fills at run time (plugins register methods and regularisers, load records
# themselves); restore_registries puts each back as it was before every test.
REGISTRIES = [
    "mimcli.methods.base:METHODS",
    "mimcli.regularizers.base:REGULARIZERS",
    "mimcli.config.sections:METHOD_SECTIONS",
    "mimcli.config.sections:REGULARIZER_SECTIONS",
    "mimcli.config.registry:_loaded_plugins",
    "mimcli.config.datasets:DATASETS",
]
PLUGIN_MODULE_PREFIX = "mim_plugin_"  # the sys.modules names of plugin files (config.registry.load_plugin)


def registry(path: str) -> dict[Any, Any]:
    module, name = path.split(":")
    found = getattr(importlib.import_module(module), name)
    assert isinstance(found, dict), path
    return found


@pytest.fixture(scope="session")
def builtins_registered() -> list[dict[Any, Any]]:
    """The registries, with the built-in methods, regularisers and data set records in them before any test
    snapshots them."""
    from mimcli.config.datasets import dataset_records
    from mimcli.config.registry import load_builtins

    load_builtins()
    dataset_records()
    return [registry(path) for path in REGISTRIES]


@pytest.fixture(autouse=True)
def restore_registries(builtins_registered: list[dict[Any, Any]]) -> Iterator[None]:
    """A plugin registered (or a registry entry changed) by one test does not leak into the next."""
    saved = [dict(table) for table in builtins_registered]
    plugin_modules = {name for name in sys.modules if name.startswith(PLUGIN_MODULE_PREFIX)}
    yield
    for table, before in zip(builtins_registered, saved):
        table.clear()
        table.update(before)
    for name in [n for n in sys.modules if n.startswith(PLUGIN_MODULE_PREFIX) and n not in plugin_modules]:
        del sys.modules[name]


@pytest.fixture
def cli(monkeypatch, capsys):
    """cli("pretrain", "--preset", ...) -> (exit code, stdout, stderr)."""
    from mimcli.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["mim", *args])
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def make_quiet(width: int = 1000) -> Console:
    """A console that records instead of printing (read it with console.file.getvalue()), wide enough
    that no line a test looks for is wrapped."""
    return Console(file=io.StringIO(), width=width)


@pytest.fixture(scope="session")
def quiet() -> Callable[..., Console]:
    """quiet() -> a recording console (see make_quiet)."""
    return make_quiet


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is faster, and immune to a machine busy with other jobs. Modules of
    tiny tensors use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def make_run() -> Callable[..., Path]:
    """make_run(root, seed=0, overrides=None) -> a run directory with a random width-8 ResNet-18 (no training
    loop involved)."""
    from mimcli.config import load_config
    from mimcli.models.resnet import build_backbone
    from mimcli.rundir.runs import BACKBONE, save_config

    def make(root: Path, seed: int = 0, overrides: list[str] | None = None) -> Path:
        run_dir = root / "run"
        keys = ["model.width=8", "data.dataset=shapes", "data.shapes.n_train=200", "data.shapes.n_test=100"]
        config = load_config(None, [*keys, "data.download=false", *(overrides or [])])
        save_config(run_dir, config)
        torch.manual_seed(seed)
        backbone = build_backbone(config.model.backbone, config.model.width, config.data.image_size, config.model.stem)
        torch.save(backbone.state_dict(), run_dir / BACKBONE)
        return run_dir

    return make


@pytest.fixture(scope="session")
def make_image_folder() -> Callable[..., Path]:
    """make_image_folder(root, per_class=12, seed=0) -> root: two colour classes (reddish, bluish) with noise,
    train/ and test/ splits, 16 px PNGs."""

    def make(root: Path, per_class: int = 12, seed: int = 0) -> Path:
        generator = torch.Generator().manual_seed(seed)
        for split in ("train", "test"):
            for label, name in enumerate(("blue", "red")):
                folder = root / split / name
                folder.mkdir(parents=True)
                for i in range(per_class):
                    image = torch.randint(0, 120, (3, 16, 16), generator=generator, dtype=torch.uint8)
                    image[2 - 2 * label] += 120
                    Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
        return root

    return make


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="session")
def cifar10_jpeg(tmp_path_factory) -> Path:
    """A generated stand-in for the CIFAR-10 JPEG archive (docs/development.md, "The CIFAR-10 JPEG archive"):
    the same layout, cifar10-jpeg/{train,test}/<class>/NNNN.jpg, 32 px JPEGs, 60 train and 20 test images
    per class. Each class has its own mean colour under pixel noise, so a probe has something to find."""
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    generator = torch.Generator().manual_seed(0)
    archive = root / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split, count in (("train", 60), ("test", 20)):
            for label, name in enumerate(CIFAR10_CLASSES):
                folder = root / "cifar10-jpeg" / split / name
                folder.mkdir(parents=True)
                colour = torch.tensor([25 * label, 255 - 25 * label, 120], dtype=torch.int16)
                for i in range(count):
                    noise = torch.randint(-60, 61, (32, 32, 3), generator=generator, dtype=torch.int16)
                    pixels = (colour + noise).clamp(0, 255).to(torch.uint8)
                    Image.fromarray(pixels.numpy()).save(folder / f"{i:04d}.jpg", quality=90)
        tar.add(root / "cifar10-jpeg", arcname="cifar10-jpeg")
    return archive
