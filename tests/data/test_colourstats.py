"""`colourstats:PATH`: a regression probe onto each real image's mean colour and saturation."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from mimcli.data.transfer import colour_statistics, known_names, resolve_dataset


def make_folder(root: Path, colours: dict[str, list[tuple[int, int, int]]]) -> None:
    for split in ("train", "test"):
        for name, values in colours.items():
            (root / split / name).mkdir(parents=True)
            for i, rgb in enumerate(values):
                Image.new("RGB", (8, 8), rgb).save(root / split / name / f"{i:03d}.png")


def test_colour_statistics_by_hand():
    image = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    image[0, 0] = 255  # left column red, right column white
    image[0, 1, :, 1] = 255
    image[0, 2, :, 1] = 255
    # mean R = 1, mean G = mean B = 0.5; saturation = max - min per pixel: 1 (red), 0 (white) -> 0.5
    assert colour_statistics(image).tolist() == [[1.0, 0.5, 0.5, 0.5]]


def test_colourstats_probe_set_reads_the_image_folder(tmp_path):
    make_folder(tmp_path, {"a": [(255, 0, 0), (0, 0, 255)], "b": [(51, 51, 51)]})
    colour = resolve_dataset(f"colourstats:{tmp_path}", root=tmp_path, image_size=4)
    folder = resolve_dataset(f"imagefolder:{tmp_path}", root=tmp_path, image_size=4)
    # its own feature cache: cached features carry their targets, and the folder's have no colour target
    assert colour.task == "regression"
    assert colour.source != folder.source
    assert colour.source.split("-")[-1] == folder.source.split("-")[-1]  # the same folder's digest
    assert "colourstats:PATH" in known_names()
    train, test = colour.load()
    target = train.targets[colour.target]
    assert target.shape == (3, 4)
    expected = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.2, 0.0]])
    torch.testing.assert_close(target, expected, atol=1e-6, rtol=0)  # 51 / 255 = 0.2 exactly
    assert train.labels.tolist() == [0, 0, 1]
    assert test.images.shape == (3, 3, 4, 4)
