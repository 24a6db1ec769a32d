"""BatchAugment against torchvision: exact where the result is determined, statistical where it is random.

Statistical tolerances are five standard errors of the difference, the standard errors estimated from
the samples themselves (bootstrap or binomial), so a failure is a real difference, not noise; every
random draw is seeded, so the test is deterministic.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from mimcli.config import AugmentSection
from mimcli.data.augment import (
    _N_UNIFORMS,
    BRIGHTNESS,
    CONTRAST,
    HUE,
    SATURATION,
    AugmentParams,
    BatchAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    grayscale,
    normalize_only,
    resized_crop,
    sample_crop_boxes,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from torchvision_reference import torchvision_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread (conftest.py)


OFF = dict(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
K_SIGMA = 5.0


def smooth_images(n: int, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    """Colourful images with structure: random 4x4 colour fields upsampled, plus a random gradient and edge."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    field = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    ramp = torch.linspace(-0.2, 0.2, width).view(1, 1, 1, width) * torch.randn(n, 3, 1, 1, generator=g)
    edge = (torch.arange(height).view(1, 1, height, 1) > torch.randint(0, height, (n, 1, 1, 1), generator=g)).float()
    images = field + ramp + 0.15 * edge * torch.randn(n, 3, 1, 1, generator=g)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def to_unit(views: torch.Tensor, cfg: AugmentSection) -> torch.Tensor:
    """Undo Normalize: back to [0, 1]."""
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return views * std + mean


def bootstrap_se(values: torch.Tensor, stat, draws: int = 300, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, len(values), (draws, len(values)), generator=g)
    return float(torch.stack([stat(values[i]) for i in index]).std())


def assert_same_stat(ours: torch.Tensor, theirs: torch.Tensor, stat, what: str) -> None:
    a, b = float(stat(ours)), float(stat(theirs))
    tolerance = K_SIGMA * math.hypot(bootstrap_se(ours, stat), bootstrap_se(theirs, stat, seed=1))
    assert abs(a - b) <= tolerance, f"{what}: ours {a:.4f} vs torchvision {b:.4f} (tolerance {tolerance:.4f})"


def assert_rate(hits: torch.Tensor, p: float, what: str) -> None:
    n = hits.numel()
    rate = hits.float().mean().item()
    tolerance = K_SIGMA * math.sqrt(p * (1 - p) / n) + 1e-12
    assert abs(rate - p) <= tolerance, f"{what}: rate {rate:.4f}, expected {p} +- {tolerance:.4f}"


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    values = torch.cat([a, b]).unique()
    cdf_a = torch.searchsorted(a.sort().values, values, right=True) / len(a)
    cdf_b = torch.searchsorted(b.sort().values, values, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


def ks_critical(n: int, m: int, alpha: float = 1e-4) -> float:
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def torchvision_boxes(n: int, height: int, width: int, scale, ratio, seed: int = 0) -> torch.Tensor:
    crop = T.RandomResizedCrop(8, scale=scale, ratio=ratio)
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        params = [crop.make_params([image]) for _ in range(n)]
    return torch.tensor([[p["top"], p["left"], p["height"], p["width"]] for p in params])


# --------------------------------------------------------------------------------------------------
# colour helpers against torchvision.transforms.v2.functional, per-sample factors


@pytest.mark.parametrize(
    "ours, theirs, factors",
    [
        (adjust_brightness, TF.adjust_brightness, [0.0, 0.2, 1.0, 1.37, 1.8, 2.5]),
        (adjust_contrast, TF.adjust_contrast, [0.0, 0.2, 1.0, 1.37, 1.8, 2.5]),
        (adjust_saturation, TF.adjust_saturation, [0.0, 0.2, 1.0, 1.37, 1.8, 2.5]),
        (adjust_hue, TF.adjust_hue, [-0.5, -0.2, 0.0, 0.137, 0.2, 0.5]),
    ],
    ids=["brightness", "contrast", "saturation", "hue"],
)
def test_colour_ops_match_torchvision_per_sample(ours, theirs, factors):
    images = smooth_images(len(factors), 16, 16).float() / 255
    images[0, :, :4] = 0.5  # flat grey patch: hue undefined, saturation 0
    images[1, 1] = images[1, 0]  # r == g ties
    images[2, :, :, :3] = 0.0  # black
    factor = torch.tensor(factors)
    expected = torch.stack([theirs(image, f) for image, f in zip(images, factors)])
    got = ours(images, factor)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # the same factor as a float broadcasts over the batch
    torch.testing.assert_close(ours(images, factors[3]), theirs(images, factors[3]), atol=1e-5, rtol=0)


def test_grayscale_matches_torchvision():
    images = smooth_images(4, 16, 16).float() / 255
    torch.testing.assert_close(grayscale(images), TF.rgb_to_grayscale(images, num_output_channels=3), atol=1e-6, rtol=0)


def test_resized_crop_matches_torchvision_up_and_down():
    images = smooth_images(5, 40, 48)
    boxes = torch.tensor([[0, 0, 40, 48], [3, 5, 11, 7], [10, 0, 30, 48], [0, 17, 40, 31], [39, 47, 1, 1]])
    for out_size in (16, 32, 64):
        got = resized_crop(images, boxes, out_size, gain=1 / 255)
        expected = torch.stack(
            [
                TF.resized_crop(image.float() / 255, *box.tolist(), [out_size, out_size], antialias=True)
                for image, box in zip(images, boxes)
            ]
        )
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    flipped = resized_crop(images, boxes, 24, flip=torch.tensor([True, False, True, True, False]))
    plain = resized_crop(images, boxes, 24)
    torch.testing.assert_close(flipped[[0, 2, 3]], plain[[0, 2, 3]].flip(-1), atol=1e-4, rtol=0)
    torch.testing.assert_close(flipped[[1, 4]], plain[[1, 4]], atol=0, rtol=0)


# --------------------------------------------------------------------------------------------------
# the whole pipeline, given its parameters, equals torchvision's functional chain


def test_apply_equals_torchvision_functional_chain_for_sampled_params():
    cfg = AugmentSection(grayscale_p=0.3)
    aug = BatchAugment(cfg, 32)
    images = smooth_images(48, 28, 36, seed=3)  # non-square; crops both shrink and grow
    params = aug.sample_params(48, 28, 36, "cpu", torch.Generator().manual_seed(7))
    assert params.jitter.any()
    assert (~params.jitter).any()
    assert params.gray.any()
    assert params.flip.any()
    got = aug.apply(images, params)
    ops = {
        BRIGHTNESS: TF.adjust_brightness,
        CONTRAST: TF.adjust_contrast,
        SATURATION: TF.adjust_saturation,
        HUE: TF.adjust_hue,
    }
    expected = []
    for i, image in enumerate(images.float() / 255):
        top, left, height, width = params.boxes[i].tolist()
        view = TF.resized_crop(image, top, left, height, width, [32, 32], antialias=True)
        if params.flip[i]:
            view = TF.horizontal_flip(view)
        if params.jitter[i]:
            for op in params.order[i].tolist():
                view = ops[op](view, float(params.factors[i, op]))
        if params.gray[i]:
            view = TF.rgb_to_grayscale(view, num_output_channels=3)
        expected.append(TF.normalize(view, list(cfg.mean), list(cfg.std)))
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-4, rtol=0)


def test_chunking_does_not_change_the_result():
    aug = BatchAugment(AugmentSection(), 32)
    images = smooth_images(50)
    whole = aug(images, torch.Generator().manual_seed(1))
    aug.cpu_chunk = 7
    assert torch.equal(aug(images, torch.Generator().manual_seed(1)), whole)


# --------------------------------------------------------------------------------------------------
# deterministic sub-cases


@pytest.mark.parametrize("size_in, size_out", [(32, 32), (32, 48), (48, 32)])
def test_no_randomness_is_resize_and_normalize(size_in, size_out):
    cfg = AugmentSection(**OFF, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    images = smooth_images(6, size_in, size_in)
    got = BatchAugment(cfg, size_out)(images, torch.Generator().manual_seed(0))
    resized = TF.resize(images.float() / 255, [size_out, size_out], antialias=True)
    expected = TF.normalize(resized, list(cfg.mean), list(cfg.std))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(normalize_only(images, cfg, size_out), expected, atol=1e-5, rtol=0)
    if size_in == size_out:
        assert torch.equal(got, normalize_only(images, cfg, size_out))


def test_flip_only_is_torch_flip():
    images = smooth_images(400)
    clean = normalize_only(images, AugmentSection(), 32)
    always = BatchAugment(AugmentSection(**{**OFF, "flip_p": 1.0}), 32)(images, torch.Generator().manual_seed(0))
    assert torch.equal(always, clean.flip(-1))
    half = BatchAugment(AugmentSection(**{**OFF, "flip_p": 0.5}), 32)(images, torch.Generator().manual_seed(0))
    is_flipped = (half == clean.flip(-1)).flatten(1).all(1)
    is_clean = (half == clean).flatten(1).all(1)
    assert (is_flipped ^ is_clean).all(), "every view is exactly the image or its mirror"
    assert_rate(is_flipped, 0.5, "flip rate")


def test_grayscale_only():
    images = smooth_images(400)
    cfg = AugmentSection(**{**OFF, "grayscale_p": 1.0})
    views = BatchAugment(cfg, 32)(images, torch.Generator().manual_seed(0))
    grey = TF.rgb_to_grayscale(images.float() / 255, num_output_channels=3)
    expected = TF.normalize(grey, list(cfg.mean), list(cfg.std))
    torch.testing.assert_close(views, expected, atol=1e-6, rtol=0)
    cfg = AugmentSection(**{**OFF, "grayscale_p": 0.2})
    views = BatchAugment(cfg, 32)(images, torch.Generator().manual_seed(0))
    assert_rate((views[:, 0] == views[:, 1]).flatten(1).all(1), 0.2, "grey rate")


def test_brightness_alone_matches_adjust_brightness():
    cfg = AugmentSection(**{**OFF, "jitter_p": 1.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0})
    aug = BatchAugment(cfg, 32)
    images = smooth_images(20)
    params = aug.sample_params(20, 32, 32, "cpu", torch.Generator().manual_seed(0))
    assert params.factors[:, BRIGHTNESS].std() > 0.1
    assert (params.factors[:, 1:3] == 1).all()
    expected = torch.stack(
        [
            TF.normalize(TF.adjust_brightness(image.float() / 255, float(f)), list(cfg.mean), list(cfg.std))
            for image, f in zip(images, params.factors[:, BRIGHTNESS])
        ]
    )
    torch.testing.assert_close(aug.apply(images, params), expected, atol=1e-5, rtol=0)


def test_crop_sampler_first_valid_try_and_fallback():
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    tries = 10
    # try 0 needs the whole area at ratio 4/3 (too wide: invalid); try 1 is 25% of the area at ratio 1
    u_area = torch.full((1, tries), 1.0)
    u_ratio = torch.full((1, tries), 1.0)
    u_area[0, 1:3] = (0.25 - 0.08) / 0.92
    u_ratio[0, 1:3] = 0.5
    u_area[0, 2] = (0.5 - 0.08) / 0.92  # also valid (23 x 23), but not the first
    box = sample_crop_boxes(u_area, u_ratio, torch.tensor([0.999]), torch.tensor([0.0]), 32, 32, scale, ratio)
    assert box.tolist() == [[16, 0, 16, 16]]
    # no valid try: torchvision's centre-crop fallback (whole image when its ratio is in range)
    u_area = torch.ones(3, tries)
    box = sample_crop_boxes(u_area, torch.ones(3, tries), torch.rand(3), torch.rand(3), 32, 32, scale, ratio)
    assert box.tolist() == [[0, 0, 32, 32]] * 3
    box = sample_crop_boxes(u_area[:1], torch.ones(1, tries), torch.rand(1), torch.rand(1), 24, 40, scale, (0.5, 1.2))
    assert box.tolist() == [[0, (40 - 29) // 2, 24, 29]]  # too wide: height kept, width = round(24 * 1.2)


# --------------------------------------------------------------------------------------------------
# parameter distributions against torchvision's samplers


@pytest.mark.parametrize(
    "height, width, scale, ratio",
    [(32, 32, (0.08, 1.0), (3 / 4, 4 / 3)), (24, 40, (0.5, 1.0), (0.8, 2.5)), (32, 32, (0.9, 1.0), (2.0, 3.0))],
    ids=["recipe", "non-square", "mostly-fallback"],
)
def test_crop_box_distribution_matches_torchvision(height, width, scale, ratio):
    n = 3000
    cfg = AugmentSection(crop_scale=scale, crop_ratio=ratio)
    ours = BatchAugment(cfg, 16).sample_params(n, height, width, "cpu", torch.Generator().manual_seed(0)).boxes
    theirs = torchvision_boxes(n, height, width, scale, ratio)
    for boxes in (ours, theirs):
        top, left, h, w = boxes.T
        assert (top >= 0).all()
        assert (left >= 0).all()
        assert (top + h <= height).all()
        assert (left + w <= width).all()
    area = lambda b: (b[:, 2] * b[:, 3]).double() / (height * width)  # noqa: E731
    log_ratio = lambda b: (b[:, 3].double() / b[:, 2]).log()  # noqa: E731
    centre_x = lambda b: (b[:, 1] + b[:, 3] / 2).double() / width  # noqa: E731
    for name, feature in [("area fraction", area), ("log aspect ratio", log_ratio), ("centre x", centre_x)]:
        a, b = feature(ours), feature(theirs)
        assert_same_stat(a, b, torch.mean, f"mean {name}")
        assert_same_stat(a, b, torch.std, f"std {name}")
        assert ks_distance(a, b) < ks_critical(n, n), f"{name} distribution differs"


def test_flip_jitter_grey_rates_and_colour_factor_distribution():
    n = 4000
    cfg = AugmentSection()
    params = BatchAugment(cfg, 32).sample_params(n, 32, 32, "cpu", torch.Generator().manual_seed(0))
    assert_rate(params.flip, cfg.flip_p, "flip")
    assert_rate(params.jitter, cfg.jitter_p, "jitter")
    assert_rate(params.gray, cfg.grayscale_p, "grey")
    assert_rate(params.gray[params.jitter], cfg.grayscale_p, "grey among jittered")  # independent of jitter
    assert (params.factors[~params.jitter] == torch.tensor([1.0, 1.0, 1.0, 0.0])).all()

    jitter = T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        drawn = [jitter.make_params([]) for _ in range(n)]
    keys = ["brightness_factor", "contrast_factor", "saturation_factor", "hue_factor"]
    theirs = torch.tensor([[d[k] for k in keys] for d in drawn], dtype=torch.float64)
    ours = params.factors[params.jitter].double()
    for op, name in enumerate(keys):
        a, b = ours[:, op], theirs[:, op]
        assert_same_stat(a, b, torch.mean, f"mean {name}")
        assert_same_stat(a, b, torch.std, f"std {name}")
        assert ks_distance(a, b) < ks_critical(len(a), len(b)), f"{name} distribution differs"
        assert a.min() >= b.min() - 0.01
        assert a.max() <= b.max() + 0.01

    # the order: a uniformly random permutation per sample, like torchvision's randperm(4)
    order = params.order
    assert (order.sort(dim=1).values == torch.arange(4)).all()
    for position, op in itertools.product(range(4), range(4)):
        assert_rate(order[:, position] == op, 0.25, f"op {op} at position {position}")
    perms = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    counts = torch.bincount(torch.tensor([perms[tuple(p)] for p in order.tolist()]), minlength=24).double()
    chi2 = float(((counts - n / 24) ** 2 / (n / 24)).sum())
    assert chi2 < 60.0, f"permutations not uniform: chi2 {chi2:.1f} on 23 dof"  # p ~ 4e-5


# --------------------------------------------------------------------------------------------------
# output statistics against torchvision's per-image Compose


def view_features(views: torch.Tensor, cfg: AugmentSection) -> dict[str, torch.Tensor]:
    unit = to_unit(views, cfg).clamp(0, 1)
    maxc, minc = unit.amax(1), unit.amin(1)
    saturation = torch.where(maxc > 0, (maxc - minc) / maxc.clamp(min=1e-6), torch.zeros_like(maxc))
    return {
        "pixel mean": views.mean(dim=(1, 2, 3)),
        "pixel square": views.square().mean(dim=(1, 2, 3)),
        "red mean": views[:, 0].mean(dim=(1, 2)),
        "blue mean": views[:, 2].mean(dim=(1, 2)),
        "intensity": unit.mean(dim=(1, 2, 3)),
        "saturation": saturation.mean(dim=(1, 2)),
        "contrast": unit.mean(1).std(dim=(1, 2)),
        "grey": ((views[:, 0] == views[:, 1]) & (views[:, 1] == views[:, 2])).flatten(1).all(1).double(),
    }


def test_view_statistics_match_torchvision_compose():
    cfg = AugmentSection()
    images = smooth_images(300, seed=5)
    aug = BatchAugment(cfg, 32)
    generator = torch.Generator().manual_seed(0)
    ours = torch.cat([aug(images, generator), aug(images, generator)])
    compose = torchvision_pipeline(cfg, 32)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torch.stack([compose(image) for image in torch.cat([images, images])])
    assert ours.shape == theirs.shape == (600, 3, 32, 32)
    assert ours.dtype == theirs.dtype == torch.float32
    a, b = view_features(ours, cfg), view_features(theirs, cfg)
    for name in ["pixel mean", "pixel square", "red mean", "blue mean", "saturation", "contrast"]:
        assert_same_stat(a[name], b[name], torch.mean, f"mean {name}")
    assert_same_stat(a["intensity"], b["intensity"], torch.std, "brightness spread (std of view intensity)")
    assert_same_stat(a["saturation"], b["saturation"], torch.std, "std of view saturation")
    # overall pixel std from the first two moments
    std = lambda f: math.sqrt(f["pixel square"].mean() - f["pixel mean"].mean() ** 2)  # noqa: E731
    se = K_SIGMA * math.hypot(bootstrap_se(a["pixel square"], torch.mean), bootstrap_se(b["pixel square"], torch.mean))
    assert abs(std(a) ** 2 - std(b) ** 2) <= se, "pixel variance"
    # grey views: RandomGrayscale p, independent of the jitter (and nothing else makes a view exactly grey)
    assert_rate(a["grey"].bool(), cfg.grayscale_p, "grey views (ours)")
    assert_rate(b["grey"].bool(), cfg.grayscale_p, "grey views (torchvision)")
    # the two views of an image differ
    assert not torch.equal(ours[:300], ours[300:])


# --------------------------------------------------------------------------------------------------
# API behaviour


def test_reproducible_from_the_generator():
    aug = BatchAugment(AugmentSection(), 32)
    images = smooth_images(64)
    first = aug(images, torch.Generator().manual_seed(3))
    assert torch.equal(first, aug(images, torch.Generator().manual_seed(3)))
    assert not torch.allclose(first, aug(images, torch.Generator().manual_seed(4)))
    generator = torch.Generator().manual_seed(3)
    view1, view2 = aug(images, generator), aug(images, generator)
    assert torch.equal(view1, first)
    assert not torch.allclose(view1, view2)


def test_autocast_keeps_float32():
    aug = BatchAugment(AugmentSection(), 32)
    images = smooth_images(16)
    plain = aug(images, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = aug(images, torch.Generator().manual_seed(0))
        clean = normalize_only(images, AugmentSection(), 24)
    assert cast.dtype == clean.dtype == torch.float32
    assert torch.equal(cast, plain)


def test_shapes_device_and_input_checks():
    aug = BatchAugment(AugmentSection(), 24)
    out = aug(smooth_images(3, 40, 30))
    assert out.shape == (3, 3, 24, 24)
    assert out.dtype == torch.float32
    assert out.is_contiguous()
    assert out.min() >= -1.0
    assert out.max() <= 1.0  # Normalize(0.5, 0.5) of [0, 1]
    assert aug(torch.zeros(0, 3, 32, 32, dtype=torch.uint8)).shape == (0, 3, 24, 24)
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="uint8"):
        normalize_only(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), AugmentSection(), 32)
    assert isinstance(aug.sample_params(2, 32, 32, "cpu"), AugmentParams)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_for_the_same_params():
    aug = BatchAugment(AugmentSection(), 32)
    images = smooth_images(64)
    params = aug.sample_params(64, 32, 32, "cpu", torch.Generator().manual_seed(0))
    on_gpu = AugmentParams(**{k: v.cuda() for k, v in vars(params).items()})
    torch.testing.assert_close(aug.apply(images.cuda(), on_gpu).cpu(), aug.apply(images, params), atol=1e-4, rtol=0)
    generator = torch.Generator("cuda").manual_seed(0)
    views = aug(images.cuda(), generator)
    assert views.device.type == "cuda"
    assert views.shape == (64, 3, 32, 32)


def test_translate_moves_the_view_and_repeats_the_border():
    images = smooth_images(64)
    cfg = AugmentSection(**{**OFF, "translate": 3})
    augment = BatchAugment(cfg, 32)
    params = augment.sample_params(64, 32, 32, "cpu", torch.Generator().manual_seed(0))
    assert params.shift.abs().max() == 3
    assert set(params.shift.unique().tolist()) == set(range(-3, 4))
    views = augment.apply(images, params)
    # a box moved by (dy, dx) reads pixel (i + dy, j + dx), clamped to the image: replicate padding
    clean = normalize_only(images, AugmentSection(), 32)
    padded = torch.nn.functional.pad(clean, (3, 3, 3, 3), mode="replicate")
    for i, (dy, dx) in enumerate(params.shift.tolist()):
        expected = padded[i, :, 3 + dy : 3 + dy + 32, 3 + dx : 3 + dx + 32]
        torch.testing.assert_close(views[i], expected, atol=1e-5, rtol=0)


def test_translate_zero_draws_nothing():
    """Without translate the random stream is the one from before the option existed."""
    augment = BatchAugment(AugmentSection(), 32)
    generator = torch.Generator().manual_seed(0)
    params = augment.sample_params(16, 32, 32, "cpu", generator)
    assert torch.equal(params.shift, torch.zeros(16, 2, dtype=torch.int64))
    fresh = torch.Generator().manual_seed(0)
    torch.rand(16, _N_UNIFORMS, generator=fresh)
    assert torch.equal(generator.get_state(), fresh.get_state()), "one torch.rand call, as before"
