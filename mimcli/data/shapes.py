"""`shapes`: a generated, download-free data set whose factors we know to be shared (or not) by two views.

The glyph's shape is shared by the two views of the default recipe; its hue (changed by colour jitter
and grayscale) and its position (moved by the crop and the flip) are not. Every factor, nuisance and
why it is drawn that way: docs/shapes.md. Everything is vectorised torch (signed-distance glyphs with
an antialiased edge) from one seeded `torch.Generator`: the same (n, seed, image_size) gives identical bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor
from torch.nn import functional as F

from mimcli.config.datasets import Task
from mimcli.data.images import ImageData

SHAPE_NAMES: list[str] = ["disc", "square", "triangle", "cross", "ring", "star", "diamond", "L", "T", "heart"]
N_HUES = 8
HUE_NAMES: list[str] = ["red", "amber", "lime", "green", "cyan", "azure", "violet", "magenta"]
TASKS: dict[str, Task] = {"shape": "classification", "hue": "classification", "position": "regression"}
BACKGROUNDS = ("textured", "plain")  # textured: tinted grey + low-frequency field + pixel noise; plain: flat grey
LAYOUTS = ("scattered", "centred")  # scattered: uniform position inside the image; centred: centroid at the centre

LUMA = (0.299, 0.587, 0.114)  # Rec. 601, the weights torchvision's RandomGrayscale uses
HUE_JITTER = 0.4  # +- fraction of a hue class width
MAX_ANGLE = math.radians(15.0)
RADIUS_PX = (6.5, 10.0)  # bounding-circle radius at 32 px; scales with image_size
SHAPE_LUMA = (0.3, 0.7)
SHAPE_CHROMA = (0.6, 1.0)  # fraction of the largest chroma that keeps the colour in gamut at its luma
BACKGROUND_CHROMA = (0.0, 0.5)
LUMA_GAP = 0.25  # minimum |glyph luma - background luma|
LUMA_RANGE = (0.03, 0.97)
FIELD_GRID, FIELD_STD = 4, 0.05  # low-frequency background field: 4x4 grid upsampled, per channel
PIXEL_NOISE = 0.02
CHUNK = 4096

# ---------------------------------------------------------------- signed distances (local units, y up)


def _length(x: Tensor, y: Tensor) -> Tensor:
    return torch.sqrt(x * x + y * y)


def _box(x: Tensor, y: Tensor, hx: float, hy: float, cx: float = 0.0, cy: float = 0.0) -> Tensor:
    qx, qy = (x - cx).abs() - hx, (y - cy).abs() - hy
    return _length(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)


def _disc(x: Tensor, y: Tensor) -> Tensor:
    return _length(x, y) - 1.0


def _square(x: Tensor, y: Tensor) -> Tensor:
    return _box(x, y, 0.8, 0.8)


def _triangle(x: Tensor, y: Tensor) -> Tensor:
    """Equilateral triangle, apex up, centroid at the origin (Inigo Quilez's exact SDF)."""
    k = math.sqrt(3.0)
    px, py = x.abs() - 1.0, y + 1.0 / k
    fold = px + k * py > 0
    px, py = torch.where(fold, (px - k * py) / 2, px), torch.where(fold, (-k * px - py) / 2, py)
    px = px - px.clamp(-2.0, 0.0)
    return -_length(px, py) * torch.sign(py)


def _cross(x: Tensor, y: Tensor) -> Tensor:
    return torch.minimum(_box(x, y, 0.95, 0.3), _box(x, y, 0.3, 0.95))


def _ring(x: Tensor, y: Tensor) -> Tensor:
    return (_length(x, y) - 0.725).abs() - 0.275


def _star(x: Tensor, y: Tensor) -> Tensor:
    """Five-pointed star, one point up (Quilez's sdStar5 with r = 1, rf = 0.5)."""
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    px, py = x.abs(), y
    dot = (k1x * px + k1y * py).clamp(min=0)
    px, py = px - 2 * dot * k1x, py - 2 * dot * k1y
    dot = (k2x * px + k2y * py).clamp(min=0)
    px, py = px - 2 * dot * k2x, py - 2 * dot * k2y
    px, py = px.abs(), py - 1.0
    bax, bay = 0.5 * -k1y, 0.5 * k1x - 1.0
    h = ((px * bax + py * bay) / (bax * bax + bay * bay)).clamp(0.0, 1.0)
    return _length(px - bax * h, py - bay * h) * torch.sign(py * bax - px * bay)


def _diamond(x: Tensor, y: Tensor) -> Tensor:
    """Rhombus, half-width 0.6, half-height 1 (Quilez's sdRhombus)."""
    bx, by = 0.6, 1.0
    px, py = x.abs(), y.abs()
    h = (((bx - 2 * px) * bx - (by - 2 * py) * by) / (bx * bx + by * by)).clamp(-1.0, 1.0)
    d = _length(px - 0.5 * bx * (1 - h), py - 0.5 * by * (1 + h))
    return d * torch.sign(px * by + py * bx - bx * by)


def _ell(x: Tensor, y: Tensor) -> Tensor:
    return torch.minimum(_box(x, y, 0.3, 0.9, cx=-0.4), _box(x, y, 0.7, 0.3, cy=-0.6))


def _tee(x: Tensor, y: Tensor) -> Tensor:
    return torch.minimum(_box(x, y, 0.85, 0.25, cy=0.6), _box(x, y, 0.25, 0.8, cy=-0.1))


def _heart(x: Tensor, y: Tensor) -> Tensor:
    """Heart with its tip at the origin and lobes near y = 1.2 (Quilez's sdHeart)."""
    x = x.abs()
    upper = _length(x - 0.25, y - 0.75) - math.sqrt(2.0) / 4
    m = 0.5 * (x + y).clamp(min=0)
    lower = torch.sqrt(torch.minimum(x * x + (y - 1) ** 2, (x - m) ** 2 + (y - m) ** 2)) * torch.sign(x - y)
    return torch.where(y + x > 1.0, upper, lower)


_SDFS: list[Callable[[Tensor, Tensor], Tensor]] = [
    _disc,
    _square,
    _triangle,
    _cross,
    _ring,
    _star,
    _diamond,
    _ell,
    _tee,
    _heart,
]


@cache
def _geometry() -> tuple[Tensor, Tensor]:
    """Per shape: area centroid (x, y up) and bounding radius about it, in local units (computed once)."""
    side = 401
    axis = torch.linspace(-2.0, 2.0, side, dtype=torch.float64)
    step = float(axis[1] - axis[0])
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    centroids, radii = [], []
    for sdf in _SDFS:
        inside = sdf(x, y) < 0
        cx, cy = x[inside].mean(), y[inside].mean()
        centroids.append(torch.stack([cx, cy]))
        radii.append(_length(x[inside] - cx, y[inside] - cy).max() + step)
    return torch.stack(centroids).float(), torch.stack(radii).float()


# ---------------------------------------------------------------- colour


def hue_to_rgb(hue: Tensor) -> Tensor:
    """Fully saturated, full-value RGB (..., 3) in [0, 1] for hues in [0, 1) (HSV with s = v = 1)."""
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hue.dtype)
    k = (n + hue.unsqueeze(-1) * 6) % 6
    return 1 - torch.minimum(k, 4 - k).clamp(0, 1)


def rgb_hue(rgb: Tensor) -> Tensor:
    """HSV hue in [0, 1) of RGB values (..., 3); 0 for greys."""
    r, g, b = rgb.unbind(-1)
    high, low = rgb.max(-1).values, rgb.min(-1).values
    chroma = (high - low).clamp(min=1e-12)
    hue = torch.where(
        high == r, ((g - b) / chroma) % 6, torch.where(high == g, (b - r) / chroma + 2, (r - g) / chroma + 4)
    )
    return torch.where(high > low, hue / 6, torch.zeros_like(hue)) % 1.0


def luma(rgb: Tensor) -> Tensor:
    """Rec. 601 grey value of RGB (..., 3)."""
    return rgb @ torch.tensor(LUMA, dtype=rgb.dtype)


def isoluminant_rgb(hue: Tensor, grey: Tensor, chroma: Tensor) -> Tensor:
    """RGB (n, 3) with HSV hue `hue`, luma exactly `grey`, and `chroma` in [0, 1] of the largest in-gamut chroma.

    The colour is grey + a * (pure - luma(pure)): adding grey and scaling by a > 0 keep the HSV hue,
    the direction has zero luma, and a is capped so that no channel leaves [0, 1].
    """
    direction = hue_to_rgb(hue)
    direction = direction - luma(direction).unsqueeze(-1)
    level = grey.unsqueeze(-1)
    up = (1 - level) / direction.clamp(min=1e-12)  # how far each channel may rise ...
    down = level / (-direction).clamp(min=1e-12)  # ... or fall before leaving [0, 1]
    room = torch.where(direction > 0, up, torch.where(direction < 0, down, torch.full_like(direction, math.inf)))
    scale = room.min(-1).values * chroma
    return (level + scale.unsqueeze(-1) * direction).clamp(0, 1)


# ---------------------------------------------------------------- latents and rendering


@dataclass
class ShapeLatents:
    """Every factor of n images; lengths in pixels, centre = (x, y) of the area centroid, y downward."""

    shape: Tensor  # long (n,)
    hue: Tensor  # long (n,), class
    hue_value: Tensor  # float (n,), the drawn hue in [0, 1)
    shape_rgb: Tensor  # float (n, 3) in [0, 1]
    centre_px: Tensor  # float (n, 2)
    radius_px: Tensor  # float (n,), bounding-circle radius
    angle: Tensor  # float (n,), radians
    background_rgb: Tensor  # float (n, 3), mean background colour before the field and noise
    image_size: int

    @property
    def position(self) -> Tensor:
        return (self.centre_px / self.image_size).float()


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _sample_latents(n: int, generator: torch.Generator, image_size: int, layout: str = "scattered") -> ShapeLatents:
    """Every factor of n images. `layout="centred"` still draws the position (and discards it), so every
    other factor is the same as the scattered layout's for the same seed."""
    shape = torch.randint(len(SHAPE_NAMES), (n,), generator=generator)
    hue = torch.randint(N_HUES, (n,), generator=generator)
    hue_value = ((hue + _uniform(generator, n, -HUE_JITTER, HUE_JITTER)) / N_HUES) % 1.0
    shape_luma = _uniform(generator, n, *SHAPE_LUMA)
    shape_rgb = isoluminant_rgb(hue_value, shape_luma, _uniform(generator, n, *SHAPE_CHROMA))
    radius = _uniform(generator, n, *RADIUS_PX) * (image_size / 32)
    angle = _uniform(generator, n, -MAX_ANGLE, MAX_ANGLE)
    # the antialiased edge reaches 0.5 px beyond the bounding circle: a 1 px margin leaves the border pixels clear
    margin = (radius + 1.0).unsqueeze(1)
    centre = margin + torch.rand(n, 2, generator=generator) * (image_size - 2 * margin)
    if layout == "centred":
        centre = torch.full_like(centre, image_size / 2)
    # background luma: uniform over [lo, L - gap] u [L + gap, hi], L the glyph's luma
    lo, hi = LUMA_RANGE
    below = (shape_luma - LUMA_GAP - lo).clamp(min=0)
    above = (hi - shape_luma - LUMA_GAP).clamp(min=0)
    u = torch.rand(n, generator=generator) * (below + above)
    background_luma = torch.where(u < below, lo + u, shape_luma + LUMA_GAP + (u - below))
    background_rgb = isoluminant_rgb(
        torch.rand(n, generator=generator), background_luma, _uniform(generator, n, *BACKGROUND_CHROMA)
    )
    return ShapeLatents(shape, hue, hue_value, shape_rgb, centre, radius, angle, background_rgb, image_size)


def shape_latents(n: int, seed: int = 0, image_size: int = 32, layout: str = "scattered") -> ShapeLatents:
    """The factors `generate_shapes(n, seed, image_size, layout=layout)` draws its images from (same values)."""
    _check(n, image_size, layout=layout)
    return _sample_latents(n, torch.Generator().manual_seed(seed), image_size, layout)


def render_coverage(shape: Tensor, centre_px: Tensor, radius_px: Tensor, angle: Tensor, image_size: int) -> Tensor:
    """Antialiased glyph coverage in [0, 1], float (n, image_size, image_size).

    shape (n,) class index; centre_px (n, 2) where the area centroid goes (x, y, pixels, y down,
    pixel i spans [i, i + 1)); radius_px (n,) bounding-circle radius; angle (n,) radians.
    """
    centroids, bounds = _geometry()
    grid = torch.arange(image_size, dtype=torch.float32) + 0.5
    out = torch.zeros(len(shape), image_size, image_size)
    for k, sdf in enumerate(_SDFS):
        index = (shape == k).nonzero().squeeze(1)
        if index.numel() == 0:
            continue
        cx, cy = centre_px[index].float().T.unsqueeze(-1).unsqueeze(-1)
        dx, dy = grid.view(1, 1, -1) - cx, grid.view(1, -1, 1) - cy
        cos, sin = (t.view(-1, 1, 1) for t in (angle[index].cos(), angle[index].sin()))
        px_per_unit = (radius_px[index] / bounds[k]).view(-1, 1, 1)
        u = (cos * dx + sin * dy) / px_per_unit + centroids[k, 0]
        v = (sin * dx - cos * dy) / px_per_unit + centroids[k, 1]  # local y points up
        out[index] = (0.5 - sdf(u, v) * px_per_unit).clamp(0, 1)
    return out


def _render(latents: ShapeLatents, generator: torch.Generator, background: str = "textured") -> Tensor:
    """uint8 images of the latents; `background="plain"` draws a flat grey background without field or noise."""
    size = latents.image_size
    plain = background == "plain"
    # bilinear upsampling of the FIELD_GRID x FIELD_GRID field as a (size, FIELD_GRID) matrix: separable, cheap
    upsample = F.interpolate(torch.eye(FIELD_GRID).unsqueeze(1), size=size, mode="linear", align_corners=False)
    upsample = upsample.squeeze(1).T.contiguous()
    images = torch.empty(len(latents.shape), 3, size, size, dtype=torch.uint8)
    for start in range(0, len(latents.shape), CHUNK):
        part = slice(start, start + CHUNK)
        n = len(latents.shape[part])
        alpha = render_coverage(
            latents.shape[part], latents.centre_px[part], latents.radius_px[part], latents.angle[part], size
        ).unsqueeze(1)
        if plain:  # the background's luma alone, the same in every pixel: no tint, no field, no noise
            grey = luma(latents.background_rgb[part]).view(n, 1, 1, 1).expand(n, 3, size, size)
            image = torch.lerp(grey, latents.shape_rgb[part].view(n, 3, 1, 1), alpha)
        else:
            field = torch.randn(n, 3, FIELD_GRID, FIELD_GRID, generator=generator) * FIELD_STD
            ground = upsample @ field @ upsample.T + latents.background_rgb[part].view(n, 3, 1, 1)
            image = torch.lerp(ground, latents.shape_rgb[part].view(n, 3, 1, 1), alpha)
            image.add_(torch.randn(n, 3, size, size, generator=generator), alpha=PIXEL_NOISE)
        images[part] = image.clamp_(0, 1).mul_(255).round_()
    return images


def _check(n: int, image_size: int, background: str = "textured", layout: str = "scattered") -> None:
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8 px, got {image_size}")


def generate_shapes(
    n: int, seed: int = 0, image_size: int = 32, background: str = "textured", layout: str = "scattered"
) -> ImageData:
    """n images of the `shapes` data set; labels = shape class, targets = shape, hue class, position (scattered).

    `background` (BACKGROUNDS) changes only the pixels behind the glyph: the same (n, seed) gives the
    same latents, hence the same targets, with either background. `layout="centred"` puts every glyph's
    centroid at the image centre and keeps every other factor; position is then a constant, not a target.
    """
    _check(n, image_size, background, layout)
    generator = torch.Generator().manual_seed(seed)
    latents = _sample_latents(n, generator, image_size, layout)
    images = _render(latents, generator, background)
    targets = {"shape": latents.shape.clone(), "hue": latents.hue.clone()}
    if layout == "scattered":  # centred glyphs share one position: not a factor (nor a diagnostics target)
        targets["position"] = latents.position
    return ImageData(images, latents.shape.clone(), list(SHAPE_NAMES), targets)
