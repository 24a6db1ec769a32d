"""Streamed probe features (equal to the in-memory path's, bit for bit) and the HDF5 pack (`mim pack`):
the same bytes, the same batches and the same training run as the folder it was packed from."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch
from test_stream import Interrupted, make_imagenet, stream_config, write_jpegs

from mimcli.data.augment import BatchAugment
from mimcli.data.packed import PackedIndex
from mimcli.data.packing import pack_folder
from mimcli.data.sampler import epoch_order
from mimcli.data.source import StreamSource
from mimcli.data.stream import index_split
from mimcli.data.transfer import resolve_dataset
from mimcli.errors import UsageError
from mimcli.probe.cache import FeatureCache
from mimcli.probe.extract import LAYERS
from mimcli.probe.normalization import channel_counts, channel_stats, stats_from_counts

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread (conftest.py)


def make_probe_folder(root: Path) -> Path:
    """train/ and test/ class folders of JPEGs of several aspect ratios (11 train, 7 test images)."""
    for k, name in enumerate(("a", "b")):
        write_jpegs(root / "train" / name, 6 - k, seed=k)
        write_jpegs(root / "test" / name, 4 - k, seed=10 + k)
    return root


def copy_run(run_dir: Path, target: Path) -> Path:
    """The same checkpoint and config in another folder (its own features/ cache)."""
    target.mkdir()
    for name in ("config.toml", "backbone.pt"):
        shutil.copy(run_dir / name, target / name)
    return target


def test_channel_statistics_from_histograms_are_exact():
    images = torch.randint(0, 256, (5, 3, 7, 9), dtype=torch.uint8)
    mean, std = channel_stats(images)
    x = images.double() / 255
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), x.mean(dim=(0, 2, 3)), rtol=0, atol=1e-15)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), x.std(dim=(0, 2, 3), unbiased=False), atol=1e-12)
    assert stats_from_counts(channel_counts(images[:2]) + channel_counts(images[2:])) == (mean, std)


@pytest.mark.parametrize("layout", ["test", "val"])
def test_streamed_features_equal_the_in_memory_features(tmp_path, layout, make_run):
    """Same model, same images: the cache written batch by batch (batch 4: a partial last batch, two
    decoding workers) holds exactly the arrays the in-memory path computes, checksummed."""
    run_dir = make_run(tmp_path)
    folder = make_probe_folder(tmp_path / "images")
    if layout == "val":
        (folder / "test").rename(folder / "val")
    dataset = resolve_dataset(f"imagefolder:{folder}", root=tmp_path, image_size=24)
    memory = FeatureCache(run_dir, batch_size=4, loader="memory").get(dataset)
    streamed_cache = FeatureCache(copy_run(run_dir, tmp_path / "run2"), batch_size=4, loader="stream", workers=2)
    streamed = streamed_cache.get(dataset)
    for a, b in zip(memory, streamed):
        assert len(b) == len(a) == (11 if a.meta["split"] == "train" else 7)
        for name in LAYERS:
            assert torch.equal(a.layers[name], b.layers[name])
        assert torch.equal(a.labels, b.labels)
        assert a.classes == b.classes == ["a", "b"]
        assert a.meta == {k: v for k, v in b.meta.items() if k != "complete"}  # norm_mean, norm_std, n...
    path = streamed_cache.path(dataset.source, "train", 24)
    with h5py.File(path, "r") as handle:
        assert handle.attrs["complete"]
        assert all(handle[name].fletcher32 for name in (*LAYERS, "labels"))
        assert handle["layer4"].chunks == (4, handle["layer4"].shape[1])  # written one batch per chunk
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        streamed_cache.path(dataset.source, split, 24).name for split in ("test", "train")
    )


def test_a_damaged_streamed_cache_is_reported_and_rebuilt_the_same(tmp_path, caplog, make_run):
    """A streamed cache file is checked on read like any other: a truncated one is rebuilt (streamed
    again), equal to the first."""
    run_dir = make_run(tmp_path)
    folder = make_probe_folder(tmp_path / "images")
    dataset = resolve_dataset(f"imagefolder:{folder}", root=tmp_path, image_size=24)
    cache = FeatureCache(run_dir, batch_size=4, loader="stream", workers=0)
    first_train, _ = cache.get(dataset)
    path = cache.path(dataset.source, "train", 24)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with caplog.at_level(logging.WARNING, logger="mimcli.probe.cache"):
        train, _ = FeatureCache(run_dir, batch_size=4, loader="stream", workers=0).get(dataset)
    assert any(str(path) in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    for name in LAYERS:
        assert torch.equal(train.layers[name], first_train.layers[name])


def test_an_interrupted_streamed_extraction_leaves_no_file(tmp_path, make_run):
    run_dir = make_run(tmp_path)
    folder = make_probe_folder(tmp_path / "images")
    dataset = resolve_dataset(f"imagefolder:{folder}", root=tmp_path, image_size=24)
    calls = {"n": 0}

    class Failing(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            from mimcli.rundir.weights import load_backbone

            self.inner = load_backbone(run_dir)[0]

        def forward(self, x):
            calls["n"] += 1
            if calls["n"] == 2:
                raise Interrupted
            return self.inner(x)

    cache = FeatureCache(run_dir, batch_size=4, loader="stream", workers=0, backbone_loader=Failing)
    with pytest.raises(Interrupted):
        cache.get(dataset)
    assert list((run_dir / "features").iterdir()) == []


def test_pack_holds_the_files_bytes_labels_and_splits(tmp_path):
    make_imagenet(tmp_path / "folder")
    counts = pack_folder(tmp_path / "folder", tmp_path / "set.h5")
    assert counts == {"train": 18, "val": 6}
    folder, packed = index_split(tmp_path / "folder", "train"), index_split(tmp_path / "set.h5", "train")
    assert isinstance(packed, PackedIndex)
    assert packed.classes == folder.classes
    assert torch.equal(packed.labels, folder.labels)
    assert all(packed.read(i) == Path(folder.path(i)).read_bytes() for i in range(len(folder)))
    val = index_split(tmp_path / "set.h5", "val")
    assert val.labels.tolist() == index_split(tmp_path / "folder", "val").labels.tolist() == [0, 1, 2, 0, 1, 2]
    with h5py.File(tmp_path / "set.h5", "r") as handle:
        assert json.loads(handle["train"].attrs["classes"]) == ["n001", "n002", "n003"]
        assert handle["train/names"][0].decode() == "train/n001/img0000.jpg"
        assert handle["train/data"].fletcher32


def test_pack_gives_the_folders_batches(tmp_path):
    from mimcli.config import load_config

    make_imagenet(tmp_path / "folder")
    pack_folder(tmp_path / "folder", tmp_path / "set.h5")
    augment = BatchAugment(load_config(None, []).augment, 16)
    order = epoch_order(18, 7, 4)
    out = []
    for root, workers in ((tmp_path / "folder", 0), (tmp_path / "set.h5", 2)):
        source = StreamSource(index_split(root, "train"), torch.device("cpu"), augment, 2, workers)
        out.append(list(source.batches(order, 7, torch.Generator().manual_seed(3))))
    assert len(out[0]) == len(out[1]) == 4
    for (a, la), (b, lb) in zip(*out):
        assert torch.equal(a, b)
        assert torch.equal(la, lb)


def test_training_from_the_pack_equals_training_from_the_folder(tmp_path):
    from mimcli.rundir import runs
    from mimcli.train.loop import build_trainer

    make_imagenet(tmp_path / "folder")
    pack_folder(tmp_path / "folder", tmp_path / "set.h5")
    trainers = []
    for root, name, loader in ((tmp_path / "folder", "a", "stream"), (tmp_path / "set.h5", "b", "auto")):
        trainer = build_trainer(stream_config(root, "train.epochs=1", f"data.loader={loader}"), tmp_path / name)
        assert type(trainer.source).__name__ == "StreamSource"  # a pack always streams, even below the budget
        trainer.fit(show_progress=False)
        trainers.append(trainer)
    for name, tensor in trainers[0].model.state_dict().items():
        assert torch.equal(trainers[1].model.state_dict()[name], tensor), name
    a, b = runs.read_metrics(tmp_path / "a"), runs.read_metrics(tmp_path / "b")
    assert len(a) == 1
    assert a[0]["loss"] == b[0]["loss"]


@pytest.mark.slow
def test_pack_refuses_bad_input_in_one_line(tmp_path):
    make_imagenet(tmp_path / "folder")
    existing = tmp_path / "mine.h5"
    existing.write_bytes(b"user data")
    (tmp_path / "empty").mkdir()
    for args, message in (
        ([tmp_path / "missing", tmp_path / "x.h5"], "is not a folder"),
        ([tmp_path / "folder", existing], "exists"),
        ([tmp_path / "empty", tmp_path / "x.h5"], "not found: expected"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "mimcli", "pack", *map(str, args)], capture_output=True, check=False, text=True
        )
        assert result.returncode == 2
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert existing.read_bytes() == b"user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "folder", "mine.h5"]  # no temp file left
    (tmp_path / "folder" / "train" / "n001" / "img0000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UsageError, match=r"cannot decode image .*img0000\.jpg"):
        pack_folder(tmp_path / "folder", tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "empty",
        "folder",
        "mine.h5",
    ]
    with pytest.raises(UsageError, match="not an HDF5 file"):
        index_split(existing, "train")
    with h5py.File(tmp_path / "other.h5", "w") as handle:  # HDF5, but not a pack
        handle["x"] = [1]
    with pytest.raises(UsageError, match="not a complete mim pack"):
        index_split(tmp_path / "other.h5", "train")


def test_memory_mode_refuses_a_pack_in_one_line(tmp_path, cli):
    make_imagenet(tmp_path / "folder")
    pack_folder(tmp_path / "folder", tmp_path / "set.h5")
    keys = ["model.width=8", "data.dataset=imagefolder", f"data.root='{tmp_path / 'set.h5'}'", "data.loader=memory"]
    code, _, err = cli("pretrain", *(arg for key in keys for arg in ("--set", key)), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "is a file: read a pack" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
