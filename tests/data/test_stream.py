"""Stream mode: layouts, the crop drawn from the original image as torchvision does, views that do
not depend on the worker count, the auto rule, and an exact mid-epoch resume through the Trainer;
across 2 gloo ranks, every image once per epoch and a resumed tail equal to the uninterrupted one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mimcli.config import load_config
from mimcli.data.augment import CROP_TRIES, BatchAugment, sample_crop_boxes
from mimcli.data.sampler import epoch_order
from mimcli.data.source import StreamSource
from mimcli.data.stream import (
    StreamBatches,
    index_split,
    resolve_loader,
    step_generator,
    stream_steps,
)
from mimcli.errors import UsageError

SIZES = [(30, 20), (20, 28), (24, 24), (40, 18)]  # (width, height): several aspect ratios


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n smooth random JPEGs of varying aspect ratio (bilinear upsampling of a 4x4 grid of colours)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        path = folder / f"img{i:04d}.jpg"
        small.resize((w, h), Image.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths


def make_imagenet(root: Path, per_class: int = 6) -> None:
    for k, wnid in enumerate(["n001", "n002", "n003"]):
        write_jpegs(root / "train" / wnid, per_class, seed=k)
    val = write_jpegs(root / "val", 6, seed=9)
    (root / "val_labels.txt").write_text("".join(f"{p.name} n00{1 + i % 3}\n" for i, p in enumerate(val)))


def test_imagenet_layout_train_and_flat_val(tmp_path):
    make_imagenet(tmp_path)
    train, val = index_split(tmp_path, "train"), index_split(tmp_path, "val")
    assert train.classes == val.classes == ["n001", "n002", "n003"]
    assert len(train) == 18
    assert train.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert [Path(val.path(i)).name for i in range(6)] == [f"img{i:04d}.jpg" for i in range(6)]
    assert val.labels.tolist() == [0, 1, 2, 0, 1, 2]
    (tmp_path / "val_labels.txt").unlink()
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "".join(f"img{i:04d},n003 1 2 3 4\n" for i in range(6))
    )
    assert index_split(tmp_path, "val").labels.tolist() == [2] * 6


def test_flat_val_with_an_unknown_class_is_a_clear_error(tmp_path):
    make_imagenet(tmp_path)
    (tmp_path / "val_labels.txt").write_text("img0000.jpg n999\n")
    with pytest.raises(UsageError, match="no known class for 6 images"):
        index_split(tmp_path, "val")


def test_auto_streams_only_above_the_memory_budget():
    # 1.28M ImageNet images at 224 px: 3 * 224 * 224 bytes each = 179.9 GiB
    assert resolve_loader("auto", 1_281_167, 224, 64.0) == "stream"
    assert resolve_loader("auto", 50_000, 32, 8.0) == "memory"  # CIFAR-10: 0.14 GiB
    assert resolve_loader("auto", 10, 1024, 3 * 1024 * 1024 * 10 / 2**30) == "memory"  # exactly at the budget
    assert resolve_loader("memory", 1_281_167, 224, 1.0) == "memory"


def test_crop_is_torchvision_random_resized_crop_of_the_original_image(tmp_path):
    """Each view is torchvision's resized_crop (PIL, bilinear) of the box that RandomResizedCrop's
    sampler draws for the ORIGINAL width and height (not a square resize of it)."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    make_imagenet(tmp_path)
    index = index_split(tmp_path, "train")
    order = torch.arange(8).view(2, 4)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    dataset = StreamBatches(index, order, seed=5, image_size=16, n_views=2, scale=scale, ratio=ratio)
    views, labels = dataset[1]
    assert views.shape == (8, 3, 16, 16)
    assert views.dtype == torch.uint8
    assert torch.equal(labels, index.labels[4:8])
    u = torch.rand(2, 4, 2 * CROP_TRIES + 2, generator=step_generator(5, 1))
    non_square_boxes = 0
    for v in range(2):
        for j, i in enumerate(range(4, 8)):
            image = Image.open(index.path(i)).convert("RGB")
            width, height = image.size
            row = u[v, j : j + 1]
            top, left, h, w = sample_crop_boxes(
                row[:, :CROP_TRIES],
                row[:, CROP_TRIES : 2 * CROP_TRIES],
                row[:, -2],
                row[:, -1],
                height,
                width,
                scale,
                ratio,
            )[0].tolist()
            assert top >= 0
            assert top + h <= height
            assert left >= 0
            assert left + w <= width
            non_square_boxes += h != w
            expected = TF.resized_crop(image, top, left, h, w, [16, 16], InterpolationMode.BILINEAR)
            assert torch.equal(views[v * 4 + j], torch.from_numpy(np.asarray(expected)).permute(2, 0, 1))
    assert non_square_boxes > 0


def test_views_do_not_depend_on_the_number_of_workers(tmp_path):
    make_imagenet(tmp_path)
    index = index_split(tmp_path, "train")
    order = epoch_order(len(index), 3, 4)
    dataset = StreamBatches(index, order, 3, 16, 2, (0.08, 1.0), (3 / 4, 4 / 3))
    inline = list(stream_steps(dataset, 1, workers=0, pin=False))
    workers = list(stream_steps(dataset, 1, workers=2, pin=False))
    assert len(inline) == len(order) - 1
    for (a, la), (b, lb) in zip(inline, workers):
        assert torch.equal(a, b)
        assert torch.equal(la, lb)


def stream_config(root: Path, *extra: str):
    return load_config(
        None,
        [
            "model.width=8",
            "data.dataset=imagefolder",
            f"data.root='{root}'",
            "data.image_size=16",
            "data.loader=stream",
            "data.workers=0",
            "train.batch_size=4",
            "train.epochs=2",
            "train.precision=fp32",
            "train.channels_last=false",
            "probe.datasets=[]",
            *extra,
        ],
    )


class Interrupted(Exception):
    pass


def test_trainer_resumes_exactly_from_a_mid_epoch_checkpoint(tmp_path):
    from mimcli.rundir import runs
    from mimcli.train.loop import build_trainer

    make_imagenet(tmp_path / "data")  # 18 images, batch 4: 4 steps per epoch
    config = stream_config(
        tmp_path / "data",
        "train.checkpoint_steps=2",
        "train.optimizer=lars",
        "train.lr=0.3",
        "train.schedule=warmup_cosine",
        "train.warmup_epochs=1",
    )
    straight = build_trainer(config, tmp_path / "a")
    assert type(straight.source).__name__ == "StreamSource"
    straight.fit(show_progress=False)

    (tmp_path / "b").mkdir()
    crashing = build_trainer(config, tmp_path / "b")
    save = crashing.save_checkpoint

    def save_then_crash() -> None:
        save()
        if crashing.epoch == 1 and crashing.step == 2:
            raise Interrupted

    crashing.save_checkpoint = save_then_crash  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        crashing.fit(show_progress=False)
    resumed = build_trainer(config, tmp_path / "b")
    resumed.load_checkpoint(tmp_path / "b" / runs.CHECKPOINT)
    assert (resumed.epoch, resumed.step) == (1, 2)
    resumed.fit(show_progress=False)
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    a, b = runs.read_metrics(tmp_path / "a"), runs.read_metrics(tmp_path / "b")
    assert [m["loss"] for m in a] == [m["loss"] for m in b]


def test_stream_needs_image_files(cli):
    code, _, err = cli("pretrain", "--preset", "cpu-tiny", "--set", "data.loader=stream", "--no-progress")
    assert code == 2
    assert "reads image files" in err


# --------------------------------------------------------------------------------------------- 2 gloo ranks


def _sharded(rank: int, out: Path, root: str) -> dict:
    import torch.distributed as dist

    from mimcli import distributed
    from mimcli.train.loop import epoch_seed

    dist.init_process_group("gloo")
    try:
        index = index_split(root, "train")
        augment = BatchAugment(load_config(None, []).augment, 16)
        source = StreamSource(index, torch.device("cpu"), augment, 2, workers=0)
        result: dict = {"orders": [], "tail": None, "resumed": None}
        for epoch in range(2):
            order = epoch_order(len(index), epoch_seed(0, epoch), 4, distributed.world_size(), distributed.rank())
            result["orders"].append(order)
        seed = epoch_seed(0, 0, rank)
        rng = torch.Generator().manual_seed(seed)
        straight = list(source.batches(result["orders"][0], seed, rng))
        rng = torch.Generator().manual_seed(seed)
        first = source.batches(result["orders"][0], seed, rng)
        next(first)  # step 0 done, then the run stops; the checkpoint keeps (step 1, rng state)
        state = rng.get_state()
        rng = torch.Generator().set_state(state)
        resumed = list(source.batches(result["orders"][0], seed, rng, start_step=1))
        result["equal_tail"] = all(
            torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(straight[1:], resumed)
        )
        result["tail_steps"] = len(resumed)
        return result
    finally:
        dist.destroy_process_group()


def test_two_ranks_see_every_image_once_per_epoch_and_resume_mid_epoch(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the distributed test's launcher
    from test_distributed import spawn

    from mimcli.train.loop import epoch_seed

    make_imagenet(tmp_path / "data", per_class=6)  # 18 images; global batch 8: 2 steps, 2 dropped
    ranks = spawn(_sharded, tmp_path / "spawn", str(tmp_path / "data"))
    for epoch in range(2):
        seen = torch.cat([r["orders"][epoch].flatten() for r in ranks])
        assert len(seen) == 16
        assert len(set(seen.tolist())) == 16  # none twice
        kept = torch.randperm(18, generator=torch.Generator().manual_seed(epoch_seed(0, epoch)))[:16]
        assert sorted(seen.tolist()) == sorted(kept.tolist())  # every image of the epoch's cut
    assert not torch.equal(ranks[0]["orders"][0], ranks[0]["orders"][1])  # reshuffled per epoch
    for result in ranks:
        assert result["equal_tail"]
        assert result["tail_steps"] == 1
