"""SimCLR views: the random augmentation of Chen et al. (2020) on whole batches.

Every op works on a batched float tensor (B, 3, H, W) with per-sample parameters of shape (B,),
so one call augments a batch on whatever device it lives on: no Python loop over images, no host
syncs, no data-dependent shapes. A sample that skips an op is selected with ``torch.where``, so it
comes out bit-for-bit unchanged by that op. Semantics follow ``torchvision.transforms.v2``.

Defaults are the paper's ImageNet setting (appendix A): random resized crop with scale
(0.08, 1) and ratio (3/4, 4/3), horizontal flip p=0.5, colour jitter with strength s=1
(brightness/contrast/saturation 0.8*s, hue 0.2*s) applied with p=0.8, random grayscale p=0.2,
Gaussian blur p=0.5 with sigma in [0.1, 2] and a kernel 10% of the image side, no solarize.

CIFAR setting (appendix B.9): ``jitter_strength=0.5, blur_prob=0.0``; everything else unchanged.
Solarize is not in SimCLR (BYOL adds it); it is here for experiments and off by default.

A crop reads only its box, as torchvision's crop-then-resize does, and enlarging a box matches
torchvision exactly. Resizing is plain bilinear without antialiasing, so the crop of a large image
shrunk to a small view aliases a little more than torchvision's antialiased RandomResizedCrop.
All random draws use ``generator``; it must live on the images' device.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "simclr_view",
    "two_views",
    "crop_flip",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "to_grayscale",
    "gaussian_blur",
    "solarize",
    "sample_crop_boxes",
    "IDENTITY_VIEW",
]

# simclr_view knobs that leave an image untouched (a full, unflipped crop and no colour ops)
IDENTITY_VIEW: dict[str, Any] = dict(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip_prob=0.0,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
)

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601, as torchvision


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1), to broadcast a per-sample parameter over an image batch."""
    return v.reshape(-1, 1, 1, 1)


def _rand(n: int, generator: torch.Generator | None, device: torch.device | str, *shape: int) -> torch.Tensor:
    return torch.rand(n, *shape, generator=generator, device=device)


def _uniform(
    lo: float, hi: float, n: int, generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    return lo + (hi - lo) * _rand(n, generator, device)


# ---------------------------------------------------------------- geometry


def sample_crop_boxes(
    B: int,
    H: int,
    W: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None,
    device: torch.device | str,
) -> torch.Tensor:
    """Random resized crop boxes, ``torchvision RandomResizedCrop.get_params`` vectorised.

    Returns:
        (B, 4) float32 boxes ``x0, y0, w, h`` in integer pixel units.
    """
    tries = 10
    area = H * W * _uniform(scale[0], scale[1], B * tries, generator, device).view(B, tries)
    log_r = _uniform(math.log(ratio[0]), math.log(ratio[1]), B * tries, generator, device).view(B, tries)
    r = torch.exp(log_r)
    # torch.round and Python's round both round half to even, so sizes match torchvision's
    w = torch.round(torch.sqrt(area * r))
    h = torch.round(torch.sqrt(area / r))
    ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    # uniform integer offsets in [0, W - w]; clamp because u*(n+1) can round up to n+1 in float32
    u = _rand(B, generator, device, 2)
    x0 = torch.minimum(torch.floor(u[:, 0] * (W - w + 1)), W - w)
    y0 = torch.minimum(torch.floor(u[:, 1] * (H - h + 1)), H - h)

    # central-crop fallback depends only on the static sizes, so it is plain Python
    in_ratio = W / H
    if in_ratio < min(ratio):
        fw, fh = W, int(round(W / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(H * max(ratio))), H
    else:
        fw, fh = W, H
    # scalar `other` in torch.where avoids building a host tensor and copying it to the device
    hit = ok.any(dim=1)
    fallback = ((W - fw) // 2, (H - fh) // 2, fw, fh)
    return torch.stack([torch.where(hit, v, float(f)) for v, f in zip((x0, y0, w, h), fallback, strict=True)], dim=1)


def _grid_axis(start: torch.Tensor, length: torch.Tensor, t: torch.Tensor, n: int) -> torch.Tensor:
    """Sample positions along one axis, as ``grid_sample`` coordinates (-1 and 1 are the image's outer edges).

    Args:
        start, length: (B,) the box along this axis, in pixels.
        t: (B, S) fraction of the way across the box of each output pixel's centre.
        n: the image's side along this axis.

    Returns:
        (B, S) normalised coordinates.
    """
    p = start.unsqueeze(1) + t * length.unsqueeze(1)  # pixel-edge coordinates, (B, S)
    # torchvision crops, then resizes: bilinear reads only the box, and a sample nearer the border
    # than the box's outer pixel centre takes that pixel. Clamping to the centres gives exactly that.
    p = torch.clamp(p, (start + 0.5).unsqueeze(1), (start + length - 0.5).unsqueeze(1))
    return p * (2.0 / n) - 1.0


def crop_flip(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop every image to its box, resize to (size, size) bilinearly and mirror where ``flip``.

    ``torchvision.transforms.v2.functional.resized_crop`` (crop, then ``interpolate`` with
    align_corners=False) in one ``grid_sample`` for the batch: output pixel j samples pixel-edge
    coordinate ``x0 + (j + 0.5) * w / size``, clamped to the box's outer pixel centres so no pixel
    outside the box leaks in. A box no larger than the output (upsampling) equals torchvision,
    antialias or not. A larger box (downsampling) equals ``antialias=False``; torchvision's default
    antialias averages over about w/size pixels per output pixel, where this reads the nearest 2x2.

    Args:
        x: (B, C, H, W) float images.
        boxes: (B, 4) ``x0, y0, w, h`` in pixels (floats allowed).
        flip: (B,) bool, mirror horizontally.
        size: output side.
    """
    B, C, H, W = x.shape
    x0, y0, w, h = boxes.to(x.dtype).unbind(dim=1)
    t = ((torch.arange(size, dtype=x.dtype, device=x.device) + 0.5) / size).expand(B, size)  # (B, S)
    # a flipped view reads its box right to left: output column j takes column size-1-j's position
    gx = _grid_axis(x0, w, torch.where(flip.view(B, 1), 1.0 - t, t), W)  # (B, S)
    gy = _grid_axis(y0, h, t, H)  # (B, S)
    grid = torch.stack(
        (gx.view(B, 1, size).expand(B, size, size), gy.view(B, size, 1).expand(B, size, size)), dim=-1
    )  # (B, S, S, 2): x, y
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ---------------------------------------------------------------- colour


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, repeated to 3 channels (``rgb_to_grayscale(x, 3)``)."""
    return _gray(x).expand_as(x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return (r * _GRAY_WEIGHTS[0] + g * _GRAY_WEIGHTS[1] + b * _GRAY_WEIGHTS[2]).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    # other + f * (x - other) == f*x + (1-f)*other, in one fused kernel
    return torch.lerp(other.expand_as(x), x, _per_sample(f).to(x.dtype)).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Scale intensities by ``f`` (B,) and clip to [0, 1]."""
    return (x * _per_sample(f).to(x.dtype)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend each image with the mean of its grayscale by ``f`` (B,)."""
    return _blend(x, _gray(x).mean(dim=(-3, -2, -1), keepdim=True), f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend each image with its grayscale by ``f`` (B,)."""
    return _blend(x, _gray(x), f)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, _ = x.unbind(dim=-3)
    minc, maxc = torch.aminmax(x, dim=-3)
    # where max == min (greys) hue and saturation are 0; swap the zero denominators for 1 to avoid NaN
    eqc = maxc == minc
    span = maxc - minc
    s = span / torch.where(eqc, torch.ones_like(maxc), maxc)
    span_safe = torch.where(eqc, torch.ones_like(span), span).unsqueeze(-3)
    rc, gc, bc = ((maxc.unsqueeze(-3) - x) / span_safe).unbind(dim=-3)
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(dim=-3)
    # closed form of torchvision's sector table (v, p, q, t): channel n in (5, 3, 1) for (r, g, b) is
    # v - v*s*clamp(min(k, 4 - k), 0, 1) with k = (n + 6h) mod 6; no index tables, no gathers
    n = torch.arange(5, 0, -2, dtype=x.dtype, device=x.device).view(3, 1, 1)  # 5, 3, 1
    k = torch.remainder(n + 6 * h.unsqueeze(-3), 6)
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    return (v.unsqueeze(-3) * (1 - s.unsqueeze(-3) * ramp)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``h`` (B,) in [-0.5, 0.5] turns, via HSV."""
    hue, s, v = _rgb_to_hsv(x).unbind(dim=-3)
    hue = torch.remainder(hue + h.to(x.dtype).view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack((hue, s, v), dim=-3))


def _sample_jitter(
    B: int, strength: float, generator: torch.Generator | None, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors (B, 4) for brightness, contrast, saturation, hue and a random op order (B, 4) per sample."""
    s = 0.8 * strength
    lo, hi = max(0.0, 1 - s), 1 + s
    bcs = [_uniform(lo, hi, B, generator, device) for _ in range(3)]
    hue = min(0.2 * strength, 0.5)
    factors = torch.stack(bcs + [_uniform(-hue, hue, B, generator, device)], dim=1)
    # argsort of iid uniforms is a uniformly random permutation, drawn without a per-sample randperm
    order = torch.argsort(_rand(B, generator, device, 4), dim=1)
    return factors, order


def _blend_step(x: torch.Tensor, op: torch.Tensor, factors: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast or saturation per sample (``op`` (B,) in 0..2), identity where not ``active``.

    All three are clamp(f*x + (1-f)*target) with target 0, the mean grey or the grey image, so one fused
    blend serves the whole batch; f=1 is an exact no-op.
    """
    f = torch.where(active, factors.gather(1, op.unsqueeze(1)).squeeze(1), 1.0)
    op = _per_sample(op)
    gray = _gray(x)
    target = torch.where(op == 0, 0.0, torch.where(op == 1, gray.mean(dim=(-2, -1), keepdim=True), gray))
    return _blend(x, target, f)


def _color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Apply the four jitter ops in each sample's ``order`` (0..3: brightness, contrast, saturation, hue)."""
    # hue is the costly op, so run it once for the batch: the cheap ops before it (in each sample's
    # order), then hue, then the cheap ops after it
    is_hue = (order == 3).to(torch.uint8)
    hue_pos = is_hue.argmax(dim=1)
    rest = order.gather(1, torch.argsort(is_hue, dim=1, stable=True))  # order with hue moved last
    for j in range(3):
        x = _blend_step(x, rest[:, j], factors, j < hue_pos)
    x = adjust_hue(x, factors[:, 3])
    for j in range(3):
        x = _blend_step(x, rest[:, j], factors, j >= hue_pos)
    return x


# ---------------------------------------------------------------- blur, solarize


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with per-sample ``sigma`` (B,) and reflect padding, as torchvision.

    Args:
        x: (B, C, H, W) float images.
        sigma: (B,) standard deviations in pixels.
        kernel_size: odd kernel side.
    """
    B, C, H, W = x.shape
    # torchvision's kernel: softmax(-(t / sigma)^2) on t in [-lim, lim], i.e. exp(-d^2 / (2 sigma^2))
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    t = torch.linspace(-lim, lim, kernel_size, dtype=x.dtype, device=x.device)
    k = torch.softmax(-((t / sigma.to(x.dtype).view(B, 1)) ** 2), dim=1)  # (B, K)
    k = k.repeat_interleave(C, dim=0)  # one kernel per (sample, channel) group
    pad = kernel_size // 2
    y = F.pad(x, [pad, pad, pad, pad], mode="reflect").reshape(1, B * C, H + 2 * pad, W + 2 * pad)
    y = F.conv2d(y, k.view(B * C, 1, 1, kernel_size), groups=B * C)
    y = F.conv2d(y, k.view(B * C, 1, kernel_size, 1), groups=B * C)
    return y.view(B, C, H, W)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert pixels at or above ``threshold``."""
    return torch.where(x >= threshold, 1 - x, x)


# ---------------------------------------------------------------- the view


def simclr_view(
    images: torch.Tensor,
    size: int | None = None,
    *,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_prob: float = 0.5,
    jitter_strength: float = 1.0,
    jitter_prob: float = 0.8,
    grayscale_prob: float = 0.2,
    blur_prob: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    blur_kernel_frac: float = 0.1,
    solarize_prob: float = 0.0,
    solarize_threshold: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One random SimCLR view of every image in a batch.

    Order as the paper: random resized crop -> horizontal flip -> colour jitter (the four ops in a
    random order per sample) -> random grayscale -> Gaussian blur -> solarize.

    Args:
        images: (B, 3, H, W) uint8 (0..255) or float (0..1), any device.
        size: output side; None keeps H.
        jitter_strength: s in the paper: brightness/contrast/saturation 0.8*s, hue 0.2*s.
        blur_kernel_frac: kernel side as a fraction of ``size``, made odd and at least 3.
        generator: source of all randomness, on the images' device.

    Returns:
        float32 (B, 3, size, size) in [0, 1] on the images' device.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    B, _, H, W = images.shape
    size = H if size is None else size
    dev = images.device
    x = images.to(torch.float32)
    if not images.is_floating_point():
        x = x / 255.0

    def coin(p: float) -> torch.Tensor:
        return _per_sample(_rand(B, generator, dev) < p)

    boxes = sample_crop_boxes(B, H, W, crop_scale, crop_ratio, generator, dev)
    x = crop_flip(x, boxes, coin(flip_prob).view(B), size)

    # probability-0 ops are skipped outright: static config, so no sync, and the draws are saved
    if jitter_prob > 0 and jitter_strength > 0:
        factors, order = _sample_jitter(B, jitter_strength, generator, dev)
        x = torch.where(coin(jitter_prob), _color_jitter(x, factors, order), x)
    if grayscale_prob > 0:
        x = torch.where(coin(grayscale_prob), to_grayscale(x), x)
    if blur_prob > 0:
        k = max(3, int(blur_kernel_frac * size) | 1)
        sigma = _uniform(blur_sigma[0], blur_sigma[1], B, generator, dev)
        x = torch.where(coin(blur_prob), gaussian_blur(x, sigma, k), x)
    if solarize_prob > 0:
        x = torch.where(coin(solarize_prob), solarize(x, solarize_threshold), x)
    # bilinear blends of in-range pixels may overshoot by an ulp
    return x.clamp(0, 1)


def two_views(
    images: torch.Tensor, size: int | None = None, *, generator: torch.Generator | None = None, **view_kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive pair: two independent ``simclr_view`` calls on the same batch."""
    return (
        simclr_view(images, size, generator=generator, **view_kwargs),
        simclr_view(images, size, generator=generator, **view_kwargs),
    )
