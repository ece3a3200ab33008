"""One small image file per image of a split, for a browser to fetch when the pointer rests on a point.

The explorer's map sends only coordinates and row numbers; a point's tooltip names
``<folder>/<row>.png``, which the browser loads once and then keeps in its cache. So the pixels
cross the network once per split, however often the page reruns. Lossless PNG for small images
(the map enlarges them with sharp pixels), JPEG above 64 px.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from simclr_core.data import ImageSet

__all__ = ["digest", "extension", "write_thumbnails"]

LOSSLESS_MAX = 64  # PNG up to this side (CIFAR, digits); JPEG above (STL-10, photos)


def digest(images: ImageSet) -> str:
    """A name for this split's pixels: its name, shape and a sample of rows (changes when they change)."""
    x = images.images
    sample = x[:: max(1, len(x) // 64)].numpy().tobytes() if len(x) else b""
    h = hashlib.sha1(f"{images.name}|{tuple(x.shape)}".encode() + sample)
    return h.hexdigest()[:16]


def extension(images: ImageSet) -> str:
    """The file extension :func:`write_thumbnails` uses for this split."""
    return "png" if images.images.shape[-1] <= LOSSLESS_MAX else "jpg"


def write_thumbnails(images: ImageSet, root: str | Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """``root/<digest>/<row>.<ext>`` for every row of ``images``, written once; returns the folder.

    The files go to a temporary folder that is renamed into place when complete, so a reader never
    finds half a set, and a set that exists is not written again.
    """
    out = Path(root) / digest(images)
    if out.is_dir():
        return out
    tmp = Path(root) / f".{out.name}.{os.getpid()}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    ext, n = extension(images), len(images)
    try:
        for i in range(n):
            pic = Image.fromarray(np.ascontiguousarray(images.images[i].numpy().transpose(1, 2, 0)))
            if ext == "png":
                pic.save(tmp / f"{i}.png", optimize=False, compress_level=1)
            else:
                pic.save(tmp / f"{i}.jpg", quality=90)
            if progress and (i % 1000 == 999 or i == n - 1):
                progress(i + 1, n)
        try:
            os.replace(tmp, out)
        except OSError:  # another writer finished first: theirs is as good as ours
            if not out.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
