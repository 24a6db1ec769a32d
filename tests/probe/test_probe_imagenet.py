"""The ImageNet probe's images against torchvision's own transforms (eval_lr_imagenet.py L86-L90): held as
Resize(256) + the centre square, so the centre 224 is Resize(256) + CenterCrop(224) of the original."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms.functional import pil_to_tensor

from mimcli.data.datasets import resize_uint8
from mimcli.data.transfer import fit_uint8, resolve_dataset
from mimcli.errors import UsageError
from mimcli.probe.imagenet import ImagenetProbeData

OFFICIAL_TEST = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])


def blocky(height: int, width: int, seed: int) -> torch.Tensor:
    """uint8 (3, H, W) of random 4 x 4 blocks: a crop one pixel off, or a squash, changes most pixels."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (3, height // 4 + 1, width // 4 + 1), generator=generator, dtype=torch.uint8)
    return blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :height, :width].contiguous()


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


@pytest.mark.parametrize("height,width", [(375, 500), (500, 333), (257, 999), (301, 400)])
def test_centre_square_is_torchvision_resize_then_centre_crop(height, width):
    """Landscape, portrait, an extreme ratio and an odd margin (the crop offset rounds): the stored square is
    torchvision's Resize(256) + CenterCrop(256) on the tensor, its centre 224 the official test transform;
    against the PIL path (what eval_lr_imagenet.py runs) only the interpolation differs, by at most one level."""
    image = blocky(height, width, seed=height)
    stored = fit_uint8(image.unsqueeze(0), 256, "centre_crop")[0]
    assert torch.equal(stored, transforms.Compose([transforms.Resize(256), transforms.CenterCrop(256)])(image))
    centre = stored[:, 16:240, 16:240]
    assert torch.equal(centre, OFFICIAL_TEST(image))
    official = pil_to_tensor(OFFICIAL_TEST(to_pil(image))).int()
    assert (centre.int() - official).abs().max().item() == 1
    assert (centre.int() - official).abs().float().mean().item() < 0.1
    # what the recipe did before (squash to 256 x 256, then the centre 224): far from the official pixels
    squashed = resize_uint8(image.unsqueeze(0), 256)[0, :, 16:240, 16:240]
    assert (squashed.int() - official).abs().float().mean().item() > 20


@pytest.mark.parametrize("side", [32, 300])
def test_a_square_image_is_stored_bit_identical_to_the_squash(side):
    image = blocky(side, side, seed=side).unsqueeze(0)
    assert torch.equal(fit_uint8(image, 256, "centre_crop"), resize_uint8(image, 256))


def _cub_folder(root, images):
    folder = root / "CUB_200_2011"
    (folder / "images" / "001.A").mkdir(parents=True)
    names = [f"001.A/{i}.png" for i in range(len(images))]
    (folder / "images.txt").write_text("".join(f"{i + 1} {name}\n" for i, name in enumerate(names)))
    (folder / "image_class_labels.txt").write_text("".join(f"{i + 1} 1\n" for i in range(len(images))))
    (folder / "train_test_split.txt").write_text("".join(f"{i + 1} {int(i == 0)}\n" for i in range(len(images))))
    for name, image in zip(names, images):
        to_pil(image).save(folder / "images" / name)  # PNG: lossless, so the file holds these pixels


def test_the_recipe_reads_a_non_square_probe_set_as_the_official_test_transform(tmp_path):
    """A registry set bound as run_probes binds it (256 px, fit centre_crop): its cached test view is the
    official Resize(256) + CenterCrop(224) of each file; a set bound squashed is refused."""
    images = [blocky(300, 420, seed=1), blocky(410, 290, seed=2)]
    _cub_folder(tmp_path, images)
    bound = resolve_dataset("cub200", root=tmp_path, image_size=256, download=False, fit="centre_crop")
    train, test = ImagenetProbeData(bound).centred().load()
    assert torch.equal(train.images[0], OFFICIAL_TEST(images[0]))
    assert torch.equal(test.images[0], OFFICIAL_TEST(images[1]))
    official = pil_to_tensor(OFFICIAL_TEST(to_pil(images[1]))).int()
    assert (test.images[0].int() - official).abs().max().item() <= 1
    squashed = resolve_dataset("cub200", root=tmp_path, image_size=256, download=False)
    with pytest.raises(UsageError, match="needs fit 'centre_crop'"):
        ImagenetProbeData(squashed)
