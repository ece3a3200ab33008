"""What the app shows of the data: positive pairs from the training views, image picks, display scaling.

Pure functions (no streamlit): the Augmentations and Search pages call them, and so can a notebook.
The views come from :func:`simclr_core.views.two_views`, the exact code training runs, so what
the page shows is what the encoder sees.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from simclr_core.errors import UserError
from simclr_core.views import IDENTITY_VIEW, simclr_view, two_views

__all__ = ["parse_indices", "positive_pairs", "sample_indices", "to_uint8_hwc", "upscale_nearest"]


def to_uint8_hwc(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] or uint8, tensor or array -> (N, H, W, 3) uint8 numpy, for display."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    x = images.detach().cpu()
    if x.is_floating_point():
        x = (x * 255).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def positive_pairs(
    images: torch.Tensor, view_kwargs: dict[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Originals and the two SimCLR views of each image, as training would draw them.

    Args:
        images: (N, 3, H, W) uint8 square images.
        view_kwargs: keyword arguments of :func:`simclr_core.views.simclr_view`, ``size`` included
            (``ViewConfig.resolved(image_side).kwargs()`` gives them).
        seed: seeds the views' generator: the same seed gives the same pairs.

    Returns:
        (originals, view 1, view 2), each (N, size, size, 3) uint8. The originals are resized to the
        view size by the same resampling as the views, so identity knobs give views equal to them.
    """
    kw = dict(view_kwargs)
    size = kw.pop("size", None)
    # the originals go through simclr_view too (with no augmentation), so their resampling matches
    # the views' exactly; their own generator keeps them from consuming the views' random draws
    originals = simclr_view(images, size, generator=torch.Generator().manual_seed(0), **IDENTITY_VIEW)
    v1, v2 = two_views(images, size, generator=torch.Generator().manual_seed(seed), **kw)
    return to_uint8_hwc(originals), to_uint8_hwc(v1), to_uint8_hwc(v2)


def sample_indices(total: int, n: int, seed: int) -> list[int]:
    """``min(n, total)`` distinct indices into ``range(total)``, the same for the same seed, sorted."""
    if total < 1:
        raise UserError("this split holds no images; pick another split or dataset")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(total, size=min(n, total), replace=False))


def parse_indices(text: str, total: int, limit: int = 16) -> list[int]:
    """Comma- or space-separated image indices typed by a user, validated against ``range(total)``.

    Raises:
        UserError: naming the entry that is not an integer or is out of range, or when there are
            none or more than ``limit``.
    """
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise UserError(f"type one or more image indices separated by commas, e.g. 0, 5, 42 (0 to {total - 1})")
    out = []
    for p in parts:
        try:
            i = int(p)
        except ValueError:
            raise UserError(f"'{p}' is not a whole number; type indices like 0, 5, 42") from None
        if not 0 <= i < total:
            raise UserError(f"index {i} is out of range: this split has {total} images, so use 0 to {total - 1}")
        out.append(i)
    if len(out) > limit:
        raise UserError(f"{len(out)} indices given; show at most {limit} at a time")
    return out


def upscale_nearest(images: np.ndarray, min_side: int) -> np.ndarray:
    """Enlarge (N, H, W, C) or (H, W, C) images by a whole factor so that H >= ``min_side``.

    Nearest-neighbour, so small images (8 px digits, 32 px CIFAR) show crisp pixels instead of
    the browser's blur; images already that large are returned as they are.
    """
    h = images.shape[-3]
    f = max(1, math.ceil(min_side / max(h, 1)))
    if f == 1:
        return images
    return images.repeat(f, axis=-3).repeat(f, axis=-2)
