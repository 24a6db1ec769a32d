"""The paper's view augmentation, drawn per sample and applied to whole uint8 batches as tensor math.

`BatchAugment(cfg, out_size)(images, generator)` takes uint8 images (B, 3, H, W) on any device and
returns float32 normalised views (B, 3, out_size, out_size) on the same device; call it twice for two
views. Everything is batched: there is no PIL and no Python loop over images. The recipe and its
semantics follow torchvision's per-image transforms (docs/reference.md#augmentation):

1. RandomResizedCrop(out_size, scale, ratio): torchvision's sampler, vectorised (float32 maths). Ten
   candidate (area, log-ratio) pairs are drawn per image and the first whose rounded integer box fits
   is taken; when none fits, torchvision's centre-crop fallback. The integer box is then resized with
   torchvision's antialiased bilinear filter (`resize(..., antialias=True)`), which is written here as
   two per-sample resampling matrices applied by batched matmul (rows, then columns). A horizontal flip
   is the column matrix with its rows reversed, so crop + flip + resize cost two small matmuls.
   Unlike `F.grid_sample`, this antialiases when a crop is larger than the output (e.g. STL-10 or
   ImageNet), and samples only inside the crop, like torchvision.
2. Horizontal flip with probability `flip_p`.
3. ColorJitter(brightness, contrast, saturation, hue) with probability `jitter_p`; the four
   operations run in a random order drawn per sample, as torchvision's ColorJitter does.
   Brightness, contrast and saturation are all blends `clamp(f * x + (1 - f) * target)` (target 0,
   the image's mean grey, the pixel's grey), so each of the four stages applies them as one fused
   blend; hue (RGB -> HSV, shift, -> RGB) runs on the samples whose stage it is.
4. RandomGrayscale with probability `grayscale_p`, then Normalize(mean, std).

The colour operations are also exposed as pure helpers taking per-sample factors (`adjust_brightness`,
`adjust_contrast`, `adjust_saturation`, `adjust_hue`, `grayscale`); they follow the float definitions
of `torchvision.transforms.v2.functional`. Maths is float32 on images in [0, 1] (torchvision rounds to
uint8 after every step of a uint8 pipeline; this does not). Autocast is disabled inside. If a caller
enables TF32 matmuls on CUDA, the resampling matmuls inherit it (errors of order 0.1 grey level of 255).

All randomness comes from one `torch.rand` call on the images' device with the given generator, so a
seeded generator reproduces the views exactly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor

if TYPE_CHECKING:
    from mimcli.config import AugmentSection, RunConfig

CROP_TRIES = 10
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
# Operation ids in torchvision's ColorJitter numbering (its `fn_idx`); also the columns of `factors`.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3
IDENTITY_FACTORS = (1.0, 1.0, 1.0, 0.0)
CPU_CHUNK = 128  # images per pass on the CPU (see BatchAugment.apply)

# Columns of the single uniform draw per sample.
_U_AREA = slice(0, CROP_TRIES)
_U_RATIO = slice(CROP_TRIES, 2 * CROP_TRIES)
_U_TOP, _U_LEFT, _U_FLIP, _U_JITTER, _U_GRAY = (2 * CROP_TRIES + k for k in range(5))
_U_FACTORS = slice(2 * CROP_TRIES + 5, 2 * CROP_TRIES + 9)
_U_ORDER = slice(2 * CROP_TRIES + 9, 2 * CROP_TRIES + 13)
_N_UNIFORMS = 2 * CROP_TRIES + 13


@dataclass
class AugmentParams:
    """Per-sample parameters of one batch of views (all on the images' device).

    boxes: (B, 4) int64 crop boxes top, left, height, width in input pixels; flip, jitter, gray: (B,)
    bool; factors: (B, 4) float32 brightness, contrast, saturation, hue factors (1, 1, 1, 0 where
    jitter is False); order: (B, 4) int64 operation ids in the order they are applied; shift: (B, 2)
    int64 pixels (down, right) by which each crop box is moved, zeros without `augment.translate`.
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor
    shift: Tensor


# ---------------------------------------------------------------------------------------------------
# colour operations on float images in [0, 1], per-sample factors


@functools.lru_cache(maxsize=64)
def constant(
    values: tuple[float, ...] | tuple[int, ...], device: torch.device, dtype: torch.dtype = torch.float32
) -> Tensor:
    """A small constant tensor, made once per device: `torch.tensor(..., device=cuda)` copies from the
    host and waits for the GPU's queue to drain, which inside a step would stall it every call.
    Callers never modify the result in place."""
    with torch.inference_mode(False):  # usable outside inference mode even when first made inside it
        return torch.tensor(values, dtype=dtype, device=device)


def _per_sample(factor: Tensor | float, images: Tensor) -> Tensor:
    """A float, or a (B,) / (B, 1, 1, 1) tensor of factors, as a (B, 1, 1, 1) float32 tensor on the images' device."""
    factor = torch.as_tensor(factor, dtype=images.dtype, device=images.device)
    return factor.reshape(-1, 1, 1, 1) if factor.dim() > 0 else factor.reshape(1, 1, 1, 1)


def rgb_to_gray(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma with torchvision's weights."""
    r, g, b = images.unbind(dim=-3)
    return r.mul(GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(-3)


def grayscale(images: Tensor) -> Tensor:
    """Three equal luma channels (torchvision's rgb_to_grayscale(num_output_channels=3))."""
    return rgb_to_gray(images).expand_as(images)


def _blend(images: Tensor, target: Tensor, factor: Tensor) -> Tensor:
    """clamp(factor * images + (1 - factor) * target, 0, 1), torchvision's `_blend` with a (B,1,1,1) factor."""
    return (images * factor).add_(target * (1.0 - factor)).clamp_(0.0, 1.0)


def adjust_brightness(images: Tensor, factor: Tensor | float) -> Tensor:
    return images.mul(_per_sample(factor, images)).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: Tensor | float) -> Tensor:
    """Blend with the per-image mean of the grey image."""
    mean = rgb_to_gray(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, _per_sample(factor, images))


def adjust_saturation(images: Tensor, factor: Tensor | float) -> Tensor:
    """Blend with the per-pixel grey image."""
    return _blend(images, rgb_to_gray(images), _per_sample(factor, images))


def adjust_hue(images: Tensor, factor: Tensor | float) -> Tensor:
    """Shift the HSV hue by `factor` (in [-0.5, 0.5], turns of the colour wheel) per sample.

    RGB -> HSV as torchvision's `_rgb_to_hsv` (Pillow's algorithm: the hue comes from the channel
    holding the maximum, r before g before b; a flat pixel has hue 0); HSV -> RGB in closed form,
    c_n = v - v s clamp(2 - |((6 h + n + 1) mod 6) - 3|, 0, 1) for n = 5, 3, 1 (r, g, b), which equals
    torchvision's sector table. v s = max - min, so saturation itself is never formed. Branches are
    selected by 0/1 float weights rather than `torch.where` (several times faster on the CPU).
    """
    shift = _per_sample(factor, images)
    maxc = images.amax(dim=-3, keepdim=True)
    delta = maxc - images.amin(dim=-3, keepdim=True)  # (B, 1, H, W), v * s
    dr, dg, db = (maxc - images).unbind(dim=-3)  # distance of each channel below the maximum, >= 0
    dr, dg, db = dr.unsqueeze(-3), dg.unsqueeze(-3), db.unsqueeze(-3)
    is_r = 1.0 - dr.sign()  # 1 where r is the maximum
    is_g = (1.0 - dg.sign()).mul_(1.0 - is_r)  # g is the maximum and r is not
    is_b = 1.0 - is_r - is_g
    # 6 * hue * delta on each branch: (g - b), (b - r) + 2 delta, (r - g) + 4 delta
    hue = (db - dg).mul_(is_r)
    hue = hue.add_((dr - db).add_(delta, alpha=2.0).mul_(is_g))
    hue = hue.add_((dg - dr).add_(delta, alpha=4.0).mul_(is_b))
    hue = hue.div_(delta.clamp(min=1e-12)).add_(shift * 6.0)  # hue in sextants, shifted: (-4, 8)
    offset = constant((6.0, 4.0, 2.0), images.device, images.dtype).view(1, 3, 1, 1)  # n + 1
    k = hue + offset
    k = k.sub_(torch.floor(k * (1.0 / 6.0)).mul_(6.0))  # mod 6, in [0, 6)
    ramp = k.sub_(3.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)
    return ramp.mul_(delta).neg_().add_(maxc)


# ---------------------------------------------------------------------------------------------------
# crop boxes and resampling


def sample_crop_boxes(
    u_area: Tensor,
    u_ratio: Tensor,
    u_top: Tensor,
    u_left: Tensor,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> Tensor:
    """torchvision's RandomResizedCrop.make_params, vectorised over rows of uniforms.

    u_area, u_ratio: (B, T) uniforms for T tries; u_top, u_left: (B,) uniforms for the offset.
    Returns (B, 4) int64 boxes (top, left, height, width).
    """
    area = height * width
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    w = torch.sqrt(target_area * aspect).round()
    h = torch.sqrt(target_area / aspect).round()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # first valid try (0 when none)
    found = valid.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    # torchvision's fallback: the largest centred box within the ratio range
    in_ratio = width / height
    if in_ratio < min(ratio):
        fall_w, fall_h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fall_w, fall_h = round(height * max(ratio)), height
    else:
        fall_w, fall_h = width, height
    w = torch.where(found, w, torch.full_like(w, fall_w)).long()
    h = torch.where(found, h, torch.full_like(h, fall_h)).long()

    # uniform integer offsets in [0, size - box], as torch.randint(0, size - box + 1)
    top_range = (height - h + 1).to(u_top.dtype)
    left_range = (width - w + 1).to(u_left.dtype)
    top = torch.minimum((u_top * top_range).floor(), top_range - 1).long()
    left = torch.minimum((u_left * left_range).floor(), left_range - 1).long()
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return torch.stack((top, left, h, w), dim=1)


def resample_weights(start: Tensor, length: Tensor, out_size: int, in_size: int) -> Tensor:
    """(B, out_size, in_size) rows that resize the interval [start, start + length) of each sample.

    The weights of torch's antialiased bilinear interpolation (`interpolate(..., antialias=True)`,
    align_corners=False): a triangle filter widened by the scale when shrinking, restricted to the
    crop and normalised, so sampling never reads outside the box (torchvision crops, then resizes).
    start and length are whole pixels.
    """
    start = start.to(torch.float32).unsqueeze(1)
    length = length.to(torch.float32).unsqueeze(1)
    step = length / out_size  # (B, 1) input pixels per output pixel
    support = step.clamp(min=1.0).unsqueeze(2)
    device = start.device
    centre = start + (torch.arange(out_size, device=device, dtype=torch.float32) + 0.5) * step  # (B, out)
    # a box moved past the edge (augment.translate) repeats the border pixels; inside the image a no-op
    centre = centre.clamp_(0.5, in_size - 0.5)
    pos = torch.arange(in_size, device=device, dtype=torch.float32)  # pixel k covers [k, k + 1)
    weights = (1.0 - ((pos + 0.5) - centre.unsqueeze(2)).abs_() / support).clamp_(min=0.0)
    # 1 for start <= k < start + length, else 0 (all integers)
    inside = (pos - start + 1.0).clamp_(0.0, 1.0).mul_((start + length - pos).clamp_(0.0, 1.0))
    weights = weights.mul_(inside.unsqueeze(1))
    return weights.div_(weights.sum(dim=2, keepdim=True))


def crop_weights(
    boxes: Tensor, out_size: int, height: int, width: int, flip: Tensor | None = None, gain: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Row (B, out, H) and column (B, out, W) resampling matrices for crop boxes (top, left, height,
    width); a flip reverses the column matrix's rows. `gain` scales the rows (folds in 1/255)."""
    rows = resample_weights(boxes[:, 0], boxes[:, 2], out_size, height)
    if gain != 1.0:
        rows = rows.mul_(gain)
    cols = resample_weights(boxes[:, 1], boxes[:, 3], out_size, width)
    if flip is not None:
        # lerp with weight exactly 0 or 1 returns exactly one end (and is faster than torch.where on the CPU)
        cols = torch.lerp(cols, cols.flip(1), flip.to(cols.dtype).view(-1, 1, 1))
    return rows, cols


def resample(images: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """rows @ image @ cols^T per sample and channel: (B, C, H, W) -> float32 (B, C, out, out)."""
    batch, channels, height, width = images.shape
    out_h, out_w = rows.shape[1], cols.shape[1]
    x = images.to(torch.float32).reshape(batch, channels * height, width)
    x = torch.bmm(x, cols.transpose(1, 2)).view(batch, channels, height, out_w)  # columns first
    return torch.matmul(rows.unsqueeze(1), x).view(batch, channels, out_h, out_w)  # then rows


def resized_crop(images: Tensor, boxes: Tensor, out_size: int, flip: Tensor | None = None, gain: float = 1.0) -> Tensor:
    """Crop each sample's box, resize it to out_size (antialiased bilinear) and optionally mirror it.

    images: (B, C, H, W) any dtype; boxes: (B, 4) top, left, height, width; flip: (B,) bool.
    Returns float32 (B, C, out_size, out_size) times `gain`.
    """
    rows, cols = crop_weights(boxes, out_size, images.shape[-2], images.shape[-1], flip, gain)
    return resample(images, rows, cols)


def _check_images(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")


def _mean_std(aug: AugmentSection, device: torch.device) -> tuple[Tensor, Tensor]:
    mean = constant(tuple(aug.mean), device).view(1, -1, 1, 1)
    std = constant(tuple(aug.std), device).view(1, -1, 1, 1)
    return mean, std


def _augment_section(cfg: AugmentSection | RunConfig) -> AugmentSection:
    """Accept the AugmentSection itself or a whole run config that has one under `.augment`."""
    return cast("AugmentSection", getattr(cfg, "augment", cfg))


def normalize_only(images: Tensor, cfg: AugmentSection | RunConfig, out_size: int) -> Tensor:
    """The clean view for evaluation and probes: resize to out_size (antialiased bilinear, as
    torchvision's Resize) when needed, then Normalize(cfg.mean, cfg.std); uint8 in, float32 out."""
    _check_images(images)
    aug = _augment_section(cfg)
    with torch.autocast(device_type=images.device.type, enabled=False):
        batch, _, height, width = images.shape
        if height == out_size and width == out_size:
            x = images.to(torch.float32).mul_(1.0 / 255.0)  # as torchvision's to_dtype(scale=True)
        else:
            full = constant((0, 0, height, width), images.device, torch.int64).expand(batch, 4)
            x = resized_crop(images, full, out_size, gain=1.0 / 255.0).clamp_(0.0, 1.0)
        mean, std = _mean_std(aug, images.device)
        return x.sub_(mean).div_(std)


class BatchAugment:
    """Random views of a uint8 batch, per-sample parameters, on the batch's device (see module doc)."""

    def __init__(self, cfg: AugmentSection, out_size: int) -> None:
        self.cfg = _augment_section(cfg)
        self.out_size = int(out_size)
        c = self.cfg
        self.factor_ranges = (
            (max(0.0, 1.0 - c.brightness), 1.0 + c.brightness),
            (max(0.0, 1.0 - c.contrast), 1.0 + c.contrast),
            (max(0.0, 1.0 - c.saturation), 1.0 + c.saturation),
            (-c.hue, c.hue),
        )
        self.cpu_chunk = CPU_CHUNK
        self.jitters = c.jitter_p > 0 and (c.brightness > 0 or c.contrast > 0 or c.saturation > 0 or c.hue > 0)

    def __repr__(self) -> str:
        return f"BatchAugment(out_size={self.out_size}, cfg={self.cfg!r})"

    def sample_params(
        self, batch: int, height: int, width: int, device: torch.device | str, generator: torch.Generator | None = None
    ) -> AugmentParams:
        """Draw every random choice for `batch` views of height x width images in one `torch.rand` call."""
        c = self.cfg
        u = torch.rand(batch, _N_UNIFORMS, generator=generator, device=device)
        boxes = sample_crop_boxes(
            u[:, _U_AREA], u[:, _U_RATIO], u[:, _U_TOP], u[:, _U_LEFT], height, width, c.crop_scale, c.crop_ratio
        )
        jitter = u[:, _U_JITTER] < c.jitter_p
        device = torch.device(device)
        lo = constant(tuple(r[0] for r in self.factor_ranges), device)
        hi = constant(tuple(r[1] for r in self.factor_ranges), device)
        factors = lo + (hi - lo) * u[:, _U_FACTORS]
        identity = constant(IDENTITY_FACTORS, device)
        factors = torch.where(jitter.unsqueeze(1), factors, identity)
        return AugmentParams(
            boxes=boxes,
            flip=u[:, _U_FLIP] < c.flip_p,
            jitter=jitter,
            factors=factors,
            order=u[:, _U_ORDER].argsort(dim=1),  # a uniformly random permutation per sample
            gray=u[:, _U_GRAY] < c.grayscale_p,
            shift=self.sample_shift(batch, device, generator),
        )

    def sample_shift(self, batch: int, device: torch.device | str, generator: torch.Generator | None) -> Tensor:
        """(B, 2) whole-pixel shifts in [-translate, translate]; drawn only when translate > 0, so runs
        without it keep their random stream (and results) unchanged."""
        t = self.cfg.translate
        if t == 0:
            return torch.zeros(batch, 2, dtype=torch.int64, device=device)
        return torch.randint(-t, t + 1, (batch, 2), generator=generator, device=device)

    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """The views of `images` for given parameters (deterministic)."""
        _check_images(images)
        batch, _, height, width = images.shape
        device = images.device
        with torch.autocast(device_type=device.type, enabled=False):
            boxes = torch.cat((params.boxes[:, :2] + params.shift, params.boxes[:, 2:]), dim=1)
            rows, cols = crop_weights(boxes, self.out_size, height, width, params.flip, gain=1.0 / 255.0)
            plan = self._jitter_plan(params) if self.jitters else ()
            gray = params.gray.to(torch.float32).view(-1, 1, 1, 1) if self.cfg.grayscale_p > 0 else None
            mean, std = _mean_std(self.cfg, device)
            out = torch.empty((batch, 3, self.out_size, self.out_size), dtype=torch.float32, device=device)
            # On the CPU, chunks of ~128 images keep the temporaries in cache (about 1.5x faster than
            # whole-batch passes at 32 px); on an accelerator one pass over the batch is best.
            chunk = self.cpu_chunk if device.type == "cpu" else max(batch, 1)
            for start in range(0, batch, chunk):
                part = slice(start, start + chunk)
                x = resample(images[part], rows[part], cols[part]).clamp_(0.0, 1.0)
                if plan:
                    x = self._jitter(x, *(p[part] for p in plan))
                if gray is not None:
                    x = x.lerp_(grayscale(x), gray[part])  # weight 0 or 1: exactly x or its grey
                torch.div(x.sub_(mean), std, out=out[part])
            return out

    @staticmethod
    def _jitter_plan(params: AugmentParams) -> tuple[Tensor, ...]:
        """Per sample and stage (B, 4): blend factor, grey weight, mean-grey weight, hue factor, hue mask.

        Brightness, contrast and saturation are all `clamp(f x + (1 - f) target)`, with target
        a * grey + c * mean grey (a, c per sample: brightness 0, 0; contrast 0, 1; saturation 1, 0).
        A sample whose stage is hue, or that is not jittered, gets f = 1, which leaves it bit-for-bit
        unchanged.
        """
        order, dtype = params.order, params.factors.dtype
        factor = params.factors.gather(1, order)  # (B, 4) in application order
        is_hue = order == HUE
        blend = torch.where(is_hue, torch.ones_like(factor), factor)
        gray_w, mean_w = (order == SATURATION).to(dtype), (order == CONTRAST).to(dtype)
        return blend, gray_w, mean_w, factor, is_hue & params.jitter[:, None]

    def _jitter(
        self, x: Tensor, blend: Tensor, gray_w: Tensor, mean_w: Tensor, hue: Tensor, hue_mask: Tensor
    ) -> Tensor:
        """ColorJitter in four stages; at each, every sample applies the operation its order puts there:
        one fused blend for brightness / contrast / saturation, then hue on the samples whose stage it is."""
        per_sample = (-1, 1, 1, 1)
        run_hue = self.cfg.hue > 0
        for stage in range(4):
            f = blend[:, stage].view(per_sample)
            gray = rgb_to_gray(x)
            mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
            target = gray.mul_(gray_w[:, stage].view(per_sample)).add_(mean.mul_(mean_w[:, stage].view(per_sample)))
            x = x.mul_(f).add_(target.mul_(1.0 - f)).clamp_(0.0, 1.0)
            if run_hue and x.device.type == "cpu":
                index = torch.nonzero(hue_mask[:, stage]).squeeze(1)
                if index.numel():
                    x[index] = adjust_hue(x[index], hue[index, stage])
            elif run_hue:  # accelerator: select instead of index, so the step never waits on the host
                x = torch.where(hue_mask[:, stage].view(per_sample), adjust_hue(x, hue[:, stage]), x)
        return x

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(images)
        batch, _, height, width = images.shape
        params = self.sample_params(batch, height, width, images.device, generator)
        return self.apply(images, params)
