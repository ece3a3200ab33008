"""Thumbnail files: one per image, written once, lossless for small images."""

import numpy as np
import torch
from PIL import Image

from simclr_core.data import ImageSet
from simclr_core.thumbnails import digest, write_thumbnails


def images(n: int, side: int, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(
        torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g),
        torch.zeros(n, dtype=torch.long),
        [],
        f"test/{side}",
    )


def test_one_lossless_png_per_image(tmp_path):
    imgs = images(12, 32)
    out = write_thumbnails(imgs, tmp_path)
    assert out.name == digest(imgs) and sorted(p.name for p in out.iterdir()) == sorted(f"{i}.png" for i in range(12))
    back = np.asarray(Image.open(out / "7.png"))
    assert np.array_equal(back, imgs.images[7].numpy().transpose(1, 2, 0))  # pixel for pixel
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_large_images_are_jpeg_and_a_set_is_written_once(tmp_path):
    imgs = images(3, 96)
    out = write_thumbnails(imgs, tmp_path)
    assert (out / "0.jpg").is_file() and Image.open(out / "2.jpg").size == (96, 96)
    stamp = (out / "0.jpg").stat().st_mtime_ns
    assert write_thumbnails(imgs, tmp_path) == out and (out / "0.jpg").stat().st_mtime_ns == stamp


def test_other_pixels_get_another_folder():
    assert digest(images(12, 32, seed=0)) != digest(images(12, 32, seed=1))
    assert digest(images(12, 32)) == digest(images(12, 32))
