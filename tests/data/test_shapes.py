"""The generated `shapes` data set: determinism, formats, and that every target describes the drawn image."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from mimcli.config import RunConfig, ShapesSection
from mimcli.data.datasets import load_split
from mimcli.data.shapes import (
    HUE_NAMES,
    LUMA_GAP,
    N_HUES,
    SHAPE_NAMES,
    TASKS,
    generate_shapes,
    hue_to_rgb,
    isoluminant_rgb,
    luma,
    render_coverage,
    rgb_hue,
    shape_latents,
)
from mimcli.data.transfer import resolve_dataset
from mimcli.errors import UsageError

N = 400


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread (conftest.py)


@pytest.fixture(scope="module")
def data():
    return generate_shapes(N, seed=3)


@pytest.fixture(scope="module")
def latents():
    return shape_latents(N, seed=3)


@pytest.fixture(scope="module")
def coverage(latents):
    return render_coverage(latents.shape, latents.centre_px, latents.radius_px, latents.angle, 32)


def _hue_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a - b).abs() % 1.0
    return torch.minimum(d, 1 - d)


def _pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    axis = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return xs, ys


def test_same_seed_same_bytes_other_seed_differs(data):
    again = generate_shapes(N, seed=3)
    assert torch.equal(again.images, data.images)
    assert torch.equal(again.labels, data.labels)
    assert set(again.targets) == set(data.targets)
    for key in data.targets:
        assert torch.equal(again.targets[key], data.targets[key])
    other = generate_shapes(N, seed=4)
    assert (other.images != data.images).float().mean() > 0.9
    assert (other.labels != data.labels).float().mean() > 0.8
    assert (other.targets["position"] - data.targets["position"]).abs().mean() > 0.05


def test_global_rng_is_untouched_and_irrelevant():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = generate_shapes(50, seed=9)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)
    assert torch.equal(generate_shapes(50, seed=9).images, first.images)


def test_bytes_do_not_depend_on_the_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = generate_shapes(300, seed=5).images
        torch.set_num_threads(max(2, threads))
        assert torch.equal(generate_shapes(300, seed=5).images, single)
    finally:
        torch.set_num_threads(threads)


def test_formats_and_ranges(data):
    assert data.images.shape == (N, 3, 32, 32)
    assert data.images.dtype == torch.uint8
    assert data.labels.shape == (N,)
    assert data.labels.dtype == torch.long
    assert data.classes == SHAPE_NAMES
    assert len(SHAPE_NAMES) == 10
    assert set(data.targets) == set(TASKS) == {"shape", "hue", "position"}
    assert TASKS == {"shape": "classification", "hue": "classification", "position": "regression"}
    assert torch.equal(data.targets["shape"], data.labels)
    hue, position = data.targets["hue"], data.targets["position"]
    assert hue.dtype == torch.long
    assert hue.shape == (N,)
    assert N_HUES == 8
    assert len(HUE_NAMES) == N_HUES
    assert torch.equal(torch.bincount(data.labels, minlength=10) > 0, torch.ones(10, dtype=torch.bool))
    assert torch.equal(torch.bincount(hue, minlength=N_HUES) > 0, torch.ones(N_HUES, dtype=torch.bool))
    assert int(hue.min()) >= 0
    assert int(hue.max()) < N_HUES
    assert position.dtype == torch.float32
    assert position.shape == (N, 2)
    assert float(position.min()) > 0.15
    assert float(position.max()) < 0.85
    # spread over the allowed range, not clustered at the centre
    assert float(position.std(0).min()) > 0.1
    # images use the dynamic range (dark and light backgrounds both occur)
    assert int(data.images.min()) < 20
    assert int(data.images.max()) > 235


def test_other_sizes_and_empty():
    big = generate_shapes(20, seed=1, image_size=64)
    assert big.images.shape == (20, 3, 64, 64)
    assert torch.equal(big.labels, generate_shapes(20, seed=1).labels)  # the same latents, drawn at 64 px
    torch.testing.assert_close(
        big.targets["position"], generate_shapes(20, seed=1).targets["position"], atol=0.02, rtol=0
    )
    empty = generate_shapes(0)
    assert empty.images.shape == (0, 3, 32, 32)
    assert empty.targets["position"].shape == (0, 2)
    with pytest.raises(ValueError):
        generate_shapes(-1)


def test_latents_match_the_data_set(data, latents):
    assert torch.equal(latents.shape, data.labels)
    assert torch.equal(latents.hue, data.targets["hue"])
    assert torch.equal(latents.position, data.targets["position"])


def test_hue_class_is_the_hue_of_the_drawn_glyph(data, latents, coverage):
    full = coverage > 0.999
    assert bool((full.sum((1, 2)) >= 8).all())
    images = data.images.float() / 255
    glyph_rgb = (images * full.unsqueeze(1)).sum((2, 3)) / full.sum((1, 2)).unsqueeze(1)
    # the drawn glyph has the recorded colour (pixel noise averages out) ...
    assert float((glyph_rgb - latents.shape_rgb).abs().max()) < 0.02
    drawn_hue = rgb_hue(glyph_rgb)
    # ... its hue is the recorded hue, inside its class's bin (centre k/8, half-width 0.5/8)
    assert float(_hue_distance(drawn_hue, latents.hue_value).max()) < 0.01
    assert float(_hue_distance(drawn_hue, data.targets["hue"] / N_HUES).max()) < 0.5 / N_HUES
    # and the nearest class centre is the label for every image
    centres = torch.arange(N_HUES) / N_HUES
    nearest = _hue_distance(drawn_hue.unsqueeze(1), centres.unsqueeze(0)).argmin(1)
    assert torch.equal(nearest, data.targets["hue"])
    # a clean re-render (glyph on flat grey) gives the same hue in its interior
    clean = 0.5 + coverage.unsqueeze(1) * (latents.shape_rgb.view(N, 3, 1, 1) - 0.5)
    interior = (clean * full.unsqueeze(1)).sum((2, 3)) / full.sum((1, 2)).unsqueeze(1)
    assert float(_hue_distance(rgb_hue(interior), latents.hue_value).max()) < 1e-4


def test_glyph_stays_visible_in_grey_scale(data, coverage):
    grey = luma((data.images.float() / 255).permute(0, 2, 3, 1))
    inside = (grey * (coverage > 0.999)).sum((1, 2)) / (coverage > 0.999).sum((1, 2))
    outside = (grey * (coverage == 0)).sum((1, 2)) / (coverage == 0).sum((1, 2))
    assert float((inside - outside).abs().min()) > LUMA_GAP - 0.08


def test_position_is_the_centroid_of_the_drawn_glyph(data, latents, coverage):
    xs, ys = _pixel_grid(32)
    # pixels of the real image whose colour is the glyph's (the background differs by >= 0.25 in luma)
    images = data.images.float() / 255
    close = ((images - latents.shape_rgb.view(N, 3, 1, 1)).abs().amax(1) < 0.1).float()
    centroid = torch.stack([(close * xs).sum((1, 2)), (close * ys).sum((1, 2))], 1) / close.sum((1, 2)).unsqueeze(1)
    error_px = (centroid - data.targets["position"] * 32).norm(dim=1)
    assert float(error_px.max()) < 1.5
    assert float(error_px.mean()) < 0.5
    # the antialiased mask itself is centred on the target to a fraction of a pixel
    mass = coverage.sum((1, 2))
    exact = torch.stack([(coverage * xs).sum((1, 2)), (coverage * ys).sum((1, 2))], 1) / mass.unsqueeze(1)
    assert float((exact - data.targets["position"] * 32).norm(dim=1).max()) < 0.3
    # the whole glyph lies inside the image (border pixels untouched)
    border = torch.cat([coverage[:, 0], coverage[:, -1], coverage[:, :, 0], coverage[:, :, -1]], 1)
    assert float(border.max()) == 0.0


def test_position_moves_with_the_glyph(data, latents):
    # x and y really vary with where the glyph is: the image's glyph pixels move right/down with the target
    images = data.images.float() / 255
    close = ((images - latents.shape_rgb.view(N, 3, 1, 1)).abs().amax(1) < 0.1).float()
    xs, ys = _pixel_grid(32)
    centroid_x = (close * xs).sum((1, 2)) / close.sum((1, 2))
    centroid_y = (close * ys).sum((1, 2)) / close.sum((1, 2))
    assert float(torch.corrcoef(torch.stack([centroid_x, data.targets["position"][:, 0]]))[0, 1]) > 0.99
    assert float(torch.corrcoef(torch.stack([centroid_y, data.targets["position"][:, 1]]))[0, 1]) > 0.99


def test_shape_classes_draw_distinct_masks():
    k = len(SHAPE_NAMES)
    masks = render_coverage(torch.arange(k), torch.full((k, 2), 16.0), torch.full((k,), 9.0), torch.zeros(k), 32)
    area = masks.sum((1, 2))
    assert float(area.min()) > 60  # drawn large
    overlap = torch.einsum("ahw,bhw->ab", masks, masks)
    iou = overlap / (area.unsqueeze(0) + area.unsqueeze(1) - overlap)
    off_diagonal = iou[~torch.eye(k, dtype=torch.bool)]
    assert float(off_diagonal.max()) < 0.8
    # a few unmistakable facts about particular glyphs
    at = {name: masks[i] for i, name in enumerate(SHAPE_NAMES)}
    assert float(at["disc"][16, 16]) == 1.0
    assert float(at["ring"][15:17, 15:17].max()) == 0.0
    assert float(at["cross"][16, 16]) == 1.0
    assert float(at["cross"][9, 9]) == 0.0  # centre filled, corners empty
    assert float(at["square"][10, 10]) == 1.0
    tri = at["triangle"]
    assert 2 * float(tri[7:10].sum()) < float(tri[17:20].sum())  # apex up (rows 7-20): narrow top, wide base


def test_colour_helpers():
    hues = torch.rand(500, generator=torch.Generator().manual_seed(0))
    assert float(_hue_distance(rgb_hue(hue_to_rgb(hues)), hues).max()) < 1e-5
    grey = torch.rand(500, generator=torch.Generator().manual_seed(1))
    colour = isoluminant_rgb(hues, grey, torch.ones(500))
    torch.testing.assert_close(luma(colour), grey, atol=1e-5, rtol=0)
    assert float(_hue_distance(rgb_hue(colour), hues)[grey.sub(0.5).abs() < 0.45].max()) < 1e-4
    assert float(colour.min()) >= 0
    assert float(colour.max()) <= 1
    # full chroma touches the gamut boundary: some channel is at 0 or 1
    assert float(torch.minimum(colour.amin(1), 1 - colour.amax(1)).max()) < 1e-5


def test_load_split_uses_the_generator():
    test_split = load_split("shapes", "unused-root", "test", 32, shapes=ShapesSection(n_train=30, n_test=12, seed=7))
    assert torch.equal(test_split.images, generate_shapes(12, seed=8).images)
    train_split = load_split("shapes", "unused-root", "train", 64, shapes=ShapesSection(n_train=30, n_test=12, seed=7))
    assert train_split.images.shape == (30, 3, 64, 64)
    assert torch.equal(train_split.labels, generate_shapes(30, seed=7).labels)


def test_plain_background_is_one_grey_level_behind_the_same_glyphs(data, latents, coverage):
    plain = generate_shapes(N, seed=3, background="plain")
    for task in ("shape", "hue", "position"):  # the same latents: same targets as the textured images
        assert torch.equal(plain.targets[task], data.targets[task])
    pixels = plain.images.float()
    grey = (luma(latents.background_rgb) * 255).round()  # the background's luma, no tint, no field, no noise
    behind = (coverage == 0).unsqueeze(1).expand_as(pixels)
    assert torch.equal(pixels[behind], grey.view(N, 1, 1, 1).expand_as(pixels)[behind])
    inside = (coverage == 1).unsqueeze(1).expand_as(pixels)
    glyph = (latents.shape_rgb * 255).round().view(N, 3, 1, 1).expand_as(pixels)
    assert torch.equal(pixels[inside], glyph[inside])  # the glyph's own colour, without pixel noise
    with pytest.raises(ValueError, match="background"):
        generate_shapes(4, background="noisy")
    spec = ShapesSection(n_train=30, n_test=12, seed=7, background="plain")
    assert torch.equal(
        load_split("shapes", "unused-root", "test", 32, shapes=spec).images,
        generate_shapes(12, seed=8, background="plain").images,
    )
    # cached probe features are keyed by the images: the plain set must not reuse the textured set's cache
    textured = resolve_dataset(
        "shapes:hue", root="unused-root", image_size=32, shapes=ShapesSection(n_train=30, n_test=12, seed=7)
    )
    assert textured.source == "shapes-30-12-s7"  # the name caches had before backgrounds existed
    plain_set = resolve_dataset("shapes:hue", root="unused-root", image_size=32, shapes=spec)
    assert plain_set.source == "shapes-30-12-s7-plain"


def test_centred_layout_moves_only_the_glyph_to_the_centre(data, latents):
    centred = shape_latents(N, seed=3, layout="centred")
    torch.testing.assert_close(centred.centre_px, torch.full((N, 2), 16.0), atol=0, rtol=0)
    for factor in ("shape", "hue", "hue_value", "shape_rgb", "radius_px", "angle", "background_rgb"):
        assert torch.equal(getattr(centred, factor), getattr(latents, factor))  # the position draw is discarded
    images = generate_shapes(N, seed=3, background="plain", layout="centred")
    assert torch.equal(images.targets["hue"], data.targets["hue"])
    assert "position" not in images.targets  # one position for all: no target, no diagnostics estimate
    # the glyph's area centroid is the image centre: the coverage-weighted mean pixel position is (16, 16)
    coverage = render_coverage(centred.shape, centred.centre_px, centred.radius_px, centred.angle, 32)
    xs, ys = _pixel_grid(32)
    mass = coverage.sum((1, 2))
    centroid = torch.stack([(coverage * xs).sum((1, 2)) / mass, (coverage * ys).sum((1, 2)) / mass], 1)
    torch.testing.assert_close(centroid, torch.full((N, 2), 16.0), atol=0.15, rtol=0)
    with pytest.raises(ValueError, match="layout"):
        generate_shapes(4, layout="diagonal")
    spec = ShapesSection(n_train=30, n_test=12, seed=7, background="plain", layout="centred")
    assert resolve_dataset("shapes:hue", root="unused-root", image_size=32, shapes=spec).source == (
        "shapes-30-12-s7-plain-centred"
    )
    with pytest.raises(UsageError, match="layout"):
        resolve_dataset("shapes:position", root="unused-root", image_size=32, shapes=spec)


def test_config_rejects_a_position_probe_on_centred_glyphs():
    shapes = {"dataset": "shapes", "shapes": {"layout": "centred"}}
    with pytest.raises(ValidationError, match="shapes:position"):
        RunConfig.model_validate({"data": shapes, "probe": {"datasets": ["shapes:hue", "shapes:position"]}})
    assert RunConfig.model_validate({"data": shapes, "probe": {"datasets": ["shapes:hue"]}}).data.shapes.layout == (
        "centred"
    )
