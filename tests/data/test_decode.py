"""Tests for simclr_core.data.decode: image modes and sizes, order, progress, unreadable and huge images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_core.data import decode
from simclr_core.data.datasets import load_split
from simclr_core.errors import UserError

from tests.data.common import DecodeCalled, write_corrupt, write_image


def test_image_modes_become_rgb(tmp_path: Path) -> None:
    write_image(tmp_path / "m" / "grey.png", mode="L", color=77)
    write_image(tmp_path / "m" / "alpha.png", mode="RGBA", color=(1, 2, 3, 0))
    write_image(tmp_path / "m" / "palette.gif", mode="P", color=5)
    write_image(tmp_path / "m" / "photo.webp")
    write_image(tmp_path / "m" / "scan.TIFF", mode="CMYK", color=(0, 0, 0, 0))
    s = load_split("folder", "all", path=str(tmp_path / "m"), data_dir=str(tmp_path / "d"))
    assert s.images.shape == (5, 3, 16, 16) and s.skipped == 0
    grey = s.images[1]  # sorted: alpha, grey, palette, photo, scan
    assert (grey == 77).all()
    assert s.images[0, :, 0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    ("sizes", "image_size", "side"),
    [
        ([(20, 20), (20, 20)], None, 20),  # shared small square size is kept
        ([(16, 16), (24, 24)], None, 96),  # mixed sizes
        ([(30, 20), (30, 20)], None, 96),  # not square
        ([(300, 300), (300, 300)], None, 96),  # too big to keep
        ([(16, 16), (24, 24)], 12, 12),
        ([(20, 20), (20, 20)], 8, 8),
    ],
)
def test_folder_image_size(tmp_path: Path, sizes: list, image_size: int | None, side: int) -> None:
    for i, size in enumerate(sizes):
        write_image(tmp_path / "f" / f"{i}.png", size=size)
    s = load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"), image_size=image_size)
    assert s.images.shape == (len(sizes), 3, side, side)


def test_resize_keeps_the_centre(tmp_path: Path) -> None:
    img = np.zeros((10, 30, 3), dtype=np.uint8)
    img[:, :, 2] = 255  # blue sides
    img[:, 10:20] = (0, 255, 0)  # green centre square
    (tmp_path / "f").mkdir()
    Image.fromarray(img).save(tmp_path / "f" / "wide.png")
    s = load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"), image_size=10)
    centre = s.images[0, :, 1:-1, 1:-1]  # border pixels may blend under bicubic resampling
    assert (centre[1] > 240).all() and (centre[2] < 15).all()


def test_folder_of_unreadable_images(tmp_path: Path) -> None:
    write_corrupt(tmp_path / "f" / "a.jpg")
    (tmp_path / "f" / "b.png").write_text("not a png")
    with pytest.raises(UserError, match="none of the 2 image files"):
        load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"))
    assert list((tmp_path / "d" / "cache").iterdir()) == []  # no half-written files left behind


def test_progress_reports_every_image(classes_dir: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    kw = {"path": str(classes_dir), "data_dir": str(tmp_path / "d")}
    load_split("folder", "all", progress=lambda done, total: calls.append((done, total)), **kw)
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_many_images_decode_in_order(tmp_path: Path) -> None:
    """Enough files for several worker chunks; row i must still be file i."""
    for i in range(300):
        write_image(tmp_path / "f" / f"{i:03d}.png", size=(8, 8), color=(i % 256, i // 256, 7))
    write_corrupt(tmp_path / "f" / "150x.png")
    s = load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"))
    assert len(s) == 300 and s.skipped == 1
    assert s.images[:, 0, 0, 0].tolist() == [i % 256 for i in range(300)]
    assert s.images[:, 1, 0, 0].tolist() == [i // 256 for i in range(300)]


def test_interrupted_decode_leaves_no_files(tmp_path: Path) -> None:
    for i in range(200):
        write_image(tmp_path / "f" / f"{i:03d}.png", size=(8, 8))

    def stop_midway(done: int, total: int) -> None:
        if done > 0:
            raise DecodeCalled  # e.g. the user pressed stop in the app

    with pytest.raises(DecodeCalled):
        load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"), progress=stop_midway)
    assert list((tmp_path / "d" / "cache").iterdir()) == []


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    """A 16-bit PNG (mode I;16) used to decode as almost pure white."""
    grey = np.zeros((8, 8), dtype=np.uint16)
    grey[:, 2:4], grey[:, 4:6], grey[:, 6:] = 77 * 256, 32768, 65535
    (tmp_path / "f").mkdir()
    Image.fromarray(grey).save(tmp_path / "f" / "scan.png")
    assert Image.open(tmp_path / "f" / "scan.png").mode == "I;16"
    s = load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"))
    assert s.skipped == 0 and s.images.shape == (1, 3, 8, 8)
    assert s.images[0, :, 0].tolist() == [[0, 0, 77, 77, 128, 128, 255, 255]] * 3


def test_huge_images_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JPEGs decode at reduced size (Image.draft) and other images over MAX_PIXELS are skipped, never fatal."""
    monkeypatch.setattr(decode, "MAX_PIXELS", 1_000_000)  # stands in for 64 MP, to keep the test fast
    write_image(tmp_path / "f" / "photo.jpg", size=(2000, 2000), color=(0, 200, 0))  # 4 MP, but decodes at 1/8
    write_image(tmp_path / "f" / "poster.png", size=(2000, 2000))  # 4 MP, no reduced decoding: too large
    write_image(tmp_path / "f" / "small.png", color=(1, 2, 3))
    s = load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"), image_size=16)
    assert [Path(p).name for p in s.paths] == ["photo.jpg", "small.png"]
    assert (s.images[0, 1] > 190).all() and (s.images[0, 0] < 10).all() and s.images[1, :, 0, 0].tolist() == [1, 2, 3]
    assert s.skips == {"too_large": 1} and s.skipped == 1
    assert s.notes == [
        (
            f"skipped 1 unreadable entry in {(tmp_path / 'f').resolve()} (1 image over 1 megapixels "
            "(downscale it to use it), e.g. poster.png)"
        )
    ]
    assert decode._decode_one(str(tmp_path / "f" / "photo.jpg"), None).shape == (500, 500, 3)  # native: > 256 kept
    assert decode._decode_one(str(tmp_path / "f" / "poster.png"), 16, max_pixels=10**6) == "too_large"
    (tmp_path / "f" / "photo.jpg").unlink()
    (tmp_path / "f" / "small.png").unlink()
    with pytest.raises(UserError, match=r"none of the 1 image files .*1 image over 1 megapixels.*at most 1 megapixels"):
        load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"))
