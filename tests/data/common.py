"""Helpers shared by the data tests: image files, a decoder that must not run, the cache folder's files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (16, 16), color: object = (200, 30, 60), mode: str = "RGB") -> Path:
    """A solid-colour image file at ``path`` (its folders made); the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def write_corrupt(path: Path) -> Path:
    """500 random bytes at ``path``: a file with an image's name that no decoder reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    return path


class DecodeCalled(Exception):
    """Raised by a stand-in decoder to prove a load did (or did not) decode."""


def no_decode(*args: object, **kwargs: object) -> None:
    """Stands in for the decoder where a load must come from the cache."""
    raise DecodeCalled


def cache_files(data_dir: Path) -> list[str]:
    """The names in ``data_dir/cache/``, temp files included; [] when there is no such folder."""
    return sorted(p.name for p in (data_dir / "cache").iterdir()) if (data_dir / "cache").is_dir() else []
