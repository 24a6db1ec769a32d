"""The HDF5 feature cache: keyed by checkpoint, lazy backbone, atomic writes, corrupt files rebuilt."""

from __future__ import annotations

import dataclasses
import io
import logging
import shutil
from pathlib import Path

import h5py
import pytest
import torch
from rich.console import Console

from mimcli.data.transfer import resolve_dataset
from mimcli.models.resnet import build_backbone
from mimcli.probe.cache import FeatureCache
from mimcli.probe.normalization import channel_stats
from mimcli.rundir.runs import BACKBONE
from mimcli.rundir.weights import load_backbone

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread (conftest.py)


class BackboneLoader:
    """A backbone loader that counts its calls (and can be told to fail)."""

    def __init__(self, run_dir: Path, fail: bool = False) -> None:
        self.run_dir, self.fail, self.calls = run_dir, fail, 0

    def __call__(self):
        self.calls += 1
        if self.fail:
            raise AssertionError("the backbone must not be loaded on a cache hit")
        return load_backbone(self.run_dir)[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory, make_image_folder, make_run):
    """A run and an image folder whose features are cached once for the whole module."""
    root = tmp_path_factory.mktemp("built")
    run_dir = make_run(root)
    folder = make_image_folder(root / "images", per_class=6)
    dataset = resolve_dataset(f"imagefolder:{folder}", root=root, image_size=32)
    loader = BackboneLoader(run_dir)
    features = FeatureCache(run_dir, backbone_loader=loader).get(dataset)
    assert loader.calls == 1
    return run_dir, dataset, features


@pytest.fixture
def setup(built, tmp_path):
    """A copy of the built run (features included), the data set and the features first extracted."""
    run_dir, dataset, features = built
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy, dataset, features


def test_second_get_reads_the_cache_only(setup):
    run_dir, dataset, (train, test) = setup
    assert train.layers["layer4"].shape == (12, 64)
    assert test.layers["layer2"].shape == (12, 16)
    assert train.labels.tolist() == [0] * 6 + [1] * 6

    def no_images():
        raise AssertionError("the images must not be read on a cache hit")

    unreadable = dataclasses.replace(dataset, loader=no_images)
    again_train, again_test = FeatureCache(run_dir, backbone_loader=BackboneLoader(run_dir, fail=True)).get(unreadable)
    for name in ("layer2", "layer3", "layer4"):
        assert torch.equal(again_train.layers[name], train.layers[name])
        assert torch.equal(again_test.layers[name], test.layers[name])
    assert torch.equal(again_test.labels, test.labels)
    assert again_train.classes == ["blue", "red"]


def test_feature_precision_is_fp32_by_default_and_named_in_the_cache(setup):
    """probe.precision: fp32 (official) keeps the untagged file name and records "fp32"; bf16 autocast writes
    its own "-bf16" file; an untagged file whose attribute says bf16 is rebuilt in fp32."""
    run_dir, dataset, (train, _) = setup
    assert train.meta["precision"] == "fp32"
    assert FeatureCache(run_dir).path("x", "train", 32).name.endswith(f"{FeatureCache(run_dir).sha256[:16]}.h5")
    bf16 = FeatureCache(run_dir, precision="bf16")
    assert bf16.path("x", "train", 32).name.endswith("-bf16.h5")
    rounded, _ = bf16.get(dataset)
    assert rounded.meta["precision"] == "bf16-autocast"
    assert not torch.equal(rounded.layers["layer4"], train.layers["layer4"])
    # bf16 keeps 8 significant bits (relative rounding up to 2^-8 = 0.4 % per op); through a ResNet's convolutions
    # and BatchNorms the errors add up to a few percent of each feature, not more: 5 % says "the same features,
    # rounded", on any CPU, while the inequality above says the rounding really happened
    assert torch.allclose(rounded.layers["layer4"], train.layers["layer4"], rtol=0.05, atol=0.05)
    path = FeatureCache(run_dir).path(dataset.source, "train", dataset.image_size)
    with h5py.File(path, "r+") as handle:
        handle.attrs["precision"] = "bf16-autocast"  # as a bf16 extraction before the option existed wrote it
    again, _ = FeatureCache(run_dir).get(dataset)
    assert again.meta["precision"] == "fp32"
    assert torch.equal(again.layers["layer4"], train.layers["layer4"])


def test_features_are_the_normalised_backbone_outputs(setup):
    run_dir, dataset, (train, test) = setup
    images_train, images_test = dataset.load()
    mean, std = channel_stats(images_train.images)
    assert train.meta["norm_mean"] == pytest.approx(mean)
    assert test.meta["norm_std"] == pytest.approx(std)
    expected_mean = images_train.images.double().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), expected_mean)
    backbone = load_backbone(run_dir)[0]
    x = (images_test.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        reference = backbone(x)
    for name in ("layer2", "layer3", "layer4"):
        assert torch.allclose(test.layers[name], reference[name], atol=1e-5)


def test_another_checkpoint_never_uses_the_cache(setup, tmp_path):
    run_dir, dataset, (train, _) = setup
    first = FeatureCache(run_dir)
    torch.manual_seed(1)
    torch.save(build_backbone("resnet18", 8, 32).state_dict(), run_dir / BACKBONE)
    loader = BackboneLoader(run_dir)
    second = FeatureCache(run_dir, backbone_loader=loader)
    assert second.sha256 != first.sha256
    assert second.path(dataset.source, "train", 32) != first.path(dataset.source, "train", 32)
    new_train, _ = second.get(dataset)
    assert loader.calls == 1
    assert not torch.allclose(new_train.layers["layer4"], train.layers["layer4"])
    assert first.path(dataset.source, "train", 32).is_file()  # the old cache is kept, just not used


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _garbage(path: Path) -> None:
    path.write_bytes(b"not an hdf5 file" * 100)


def _incomplete(path: Path) -> None:
    with h5py.File(path, "r+") as handle:
        del handle.attrs["complete"]


def _wrong_shape(path: Path) -> None:
    with h5py.File(path, "r+") as handle:
        data = handle["layer4"][:-1]
        del handle["layer4"]
        handle.create_dataset("layer4", data=data)


@pytest.mark.parametrize("damage", [_truncate, _garbage, _incomplete, _wrong_shape])
def test_a_damaged_cache_is_reported_and_rebuilt(setup, caplog, damage):
    run_dir, dataset, (_, test) = setup
    path = FeatureCache(run_dir).path(dataset.source, "test", 32)
    damage(path)
    loader = BackboneLoader(run_dir)
    with caplog.at_level(logging.WARNING, logger="mimcli.probe.cache"):
        _, rebuilt = FeatureCache(run_dir, backbone_loader=loader).get(dataset)
    assert loader.calls == 1
    assert any(str(path) in record.getMessage() and "rebuilding" in record.getMessage() for record in caplog.records)
    assert torch.allclose(rebuilt.layers["layer4"], test.layers["layer4"], atol=1e-6)
    with h5py.File(path, "r") as handle:
        assert handle.attrs["complete"]
        assert handle["layer4"].shape == (12, 64)


def test_a_failed_write_leaves_no_file(setup, monkeypatch):
    run_dir, dataset, _ = setup
    shutil.rmtree(run_dir / "features")
    cache = FeatureCache(run_dir)

    def broken(self, name, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    with pytest.raises(OSError, match="disk full"):
        cache.get(dataset)
    assert list((run_dir / "features").iterdir()) == []  # neither the .h5 nor its temporary file


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_extraction_reports_its_batches_in_a_log_and_gives_the_same_features(
    tmp_path, monkeypatch, loader, make_image_folder, make_run
):
    """Without a terminal, extraction prints a line every LOG_EVERY batches (here 1) with the time left;
    the features are those of a silent extraction."""
    from mimcli.probe import cache as features
    from mimcli.train.progress import CountProgress

    monkeypatch.setattr(features, "LOG_EVERY", 1)
    monkeypatch.setattr(CountProgress, "quiet_s", 0.0)
    run_dir = make_run(tmp_path)
    silent_dir = shutil.copytree(run_dir, tmp_path / "silent")
    folder = make_image_folder(tmp_path / "images", per_class=6)
    dataset = resolve_dataset(f"imagefolder:{folder}", root=tmp_path, image_size=32)
    console = Console(file=io.StringIO(), width=200)
    train, _ = FeatureCache(run_dir, console=console, batch_size=4, loader=loader, workers=0).get(dataset)
    lines = console.file.getvalue().splitlines()
    steps = [line for line in lines if line.startswith(f"{dataset.name} train features: ")]
    assert [line.split(": ")[1].split()[0] for line in steps] == ["1/3", "2/3", "3/3"]
    assert all("ETA" in line and "batches/s" in line for line in steps)
    silent = FeatureCache(silent_dir, batch_size=4, loader=loader, workers=0)
    assert torch.equal(silent.get(dataset)[0].layers["layer4"], train.layers["layer4"])
