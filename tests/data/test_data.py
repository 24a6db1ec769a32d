"""Data loading: image folders, seeded subsets, missing data sets, and the real CIFAR-10 JPEGs."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from mimcli.config import ShapesSection
from mimcli.data.datasets import image_folder_split, load_image_folder, load_pretrain_data, seeded_subset
from mimcli.errors import DataNotFoundError


def make_folder(root: Path, classes: dict[str, int], size: int = 12) -> None:
    for index, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (size, size), (20 * index + i,) * 3).save(root / name / f"{i:03d}.png")


def test_image_folder_reads_classes_and_resizes(tmp_path):
    make_folder(tmp_path / "train", {"cat": 2, "dog": 3})
    data = load_image_folder(image_folder_split(tmp_path, "train"), image_size=8)
    assert data.images.shape == (5, 3, 8, 8)
    assert data.classes == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 1, 1, 1]
    assert data.images[3].float().mean().item() == pytest.approx(21, abs=0.5)  # dog #1: value 20*1 + 1


def test_root_holding_class_folders_counts_as_train(tmp_path):
    make_folder(tmp_path, {"a": 1, "b": 1})
    assert image_folder_split(tmp_path, "train") == tmp_path
    with pytest.raises(DataNotFoundError, match="test"):
        image_folder_split(tmp_path, "test")


def test_flat_folder_of_images_is_unlabeled_pretraining_data(tmp_path, cli):
    from PIL import Image

    tmp_path.joinpath("flat").mkdir()
    for i in range(40):
        Image.new("RGB", (12, 12), (i, 2 * i, 3 * i)).save(tmp_path / "flat" / f"img{i:02d}.png")
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    assert image_folder_split(tmp_path / "flat", "train") == tmp_path / "flat"
    data = load_image_folder(tmp_path / "flat", image_size=8)
    assert data.images.shape == (40, 3, 8, 8)
    assert data.classes == []
    assert data.labels.tolist() == [-1] * 40
    assert data.images[5, 1].float().mean().item() == pytest.approx(10, abs=0.5)  # img05: green = 2*5
    common = [
        "--set",
        "data.dataset=imagefolder",
        "--set",
        f"data.root='{tmp_path / 'flat'}'",
        "--set",
        "data.image_size=32",
        "--set",
        "model.width=8",
        "--set",
        "train.batch_size=16",
        "--set",
        "train.epochs=1",
        "--set",
        "probe.datasets=[]",
        "--no-progress",
    ]
    code, _, err = cli("pretrain", "--preset", "simclr", *common, "--out", str(tmp_path / "run"))
    assert code == 0, err
    from mimcli.rundir import runs

    assert [m["epoch"] for m in runs.read_metrics(tmp_path / "run")] == [1]
    code, _, err = cli("supervised", *common, "--out", str(tmp_path / "sup"))
    assert code == 2
    assert "needs labels" in err
    assert err.strip().count("\n") == 0


def test_seeded_subset_is_fixed_and_seed_dependent(tmp_path):
    data = load_pretrain_data("shapes", str(tmp_path), 32, None, 0, False, ShapesSection(n_train=100, n_test=10))
    a = seeded_subset(data, 10, seed=1)
    b = seeded_subset(data, 10, seed=1)
    c = seeded_subset(data, 10, seed=2)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert len(a) == 10
    assert torch.equal(a.targets["hue"], b.targets["hue"])


def test_missing_torchvision_dataset_fails_with_exit_2_naming_the_path(cli, tmp_path):
    root = tmp_path / "nowhere"
    code, _, err = cli(
        "pretrain",
        "--preset",
        "simclr",
        "--set",
        f"data.root='{root}'",
        "--set",
        "data.download=false",
        "--set",
        "model.width=8",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    )
    assert code == 2
    assert str(root) in err
    assert "cifar-10-batches-py" in err
    assert err.strip().count("\n") == 0


def test_empty_image_folder_fails_with_exit_2(cli, tmp_path):
    (tmp_path / "imgs" / "train" / "cls").mkdir(parents=True)
    code, _, err = cli(
        "pretrain",
        "--preset",
        "simclr",
        "--set",
        "data.dataset=imagefolder",
        "--set",
        f"data.root='{tmp_path / 'imgs'}'",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    )
    assert code == 2
    assert "no images found" in err


def extract_cifar_subset(archive_path: Path, target: Path, per_class: int) -> Path:
    """Unpack the first `per_class` training JPEGs of each class from a CIFAR-10 JPEG archive."""
    with tarfile.open(archive_path) as archive:
        members = [
            m for m in archive.getmembers() if m.isfile() and "/train/" in m.name and int(Path(m.name).stem) < per_class
        ]
        archive.extractall(target, members=members, filter="data")
    return target / "cifar10-jpeg"


def test_tiny_pretrain_on_cifar10_jpegs(cli, tmp_path, cifar10_jpeg):
    """The archive's layout end to end (generated JPEGs: conftest's cifar10_jpeg)."""
    root = extract_cifar_subset(cifar10_jpeg, tmp_path / "data", per_class=60)
    out = tmp_path / "run"
    code, _, err = cli(
        "pretrain",
        "--preset",
        "simclr",
        "--set",
        "data.dataset=imagefolder",
        "--set",
        f"data.root='{root}'",
        "--set",
        "model.width=8",
        "--set",
        "data.subset=512",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=128",
        "--set",
        "probe.datasets=[]",
        "--out",
        str(out),
        "--no-progress",
    )
    assert code == 0, err
    for name in ("config.toml", "metrics.jsonl", "checkpoint.pt", "backbone.pt", "run.json"):
        assert (out / name).is_file(), name
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1
    assert metrics[0]["epoch"] == 1
    assert 0 < metrics[0]["loss"] < 7  # NT-Xent of 2x128 views starts near log(255) = 5.5
