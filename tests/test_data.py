"""Tests for simclr_core.data: bundled digits, image folders, the decode cache and split helpers."""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from simclr_core import data
from simclr_core.data import DATASETS, ImageSet, default_splits, holdout, load_split, splits_of
from simclr_core.errors import UserError

CIFAR_TAR = Path(__file__).resolve().parents[1].parent / "shared/data/cifar10-jpg.tar.gz"


def _img(path: Path, size: tuple[int, int] = (16, 16), color: object = (200, 30, 60), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def _corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    return path


class DecodeCalled(Exception):
    """Raised by a stand-in decoder to prove a load did (or did not) decode."""


def _no_decode(*args: object, **kwargs: object) -> None:
    raise DecodeCalled


@pytest.fixture
def classes_dir(tmp_path: Path) -> Path:
    """cats/ (2 images + a corrupt .jpg), dogs/ (2 images, one nested), plus files to ignore."""
    root = tmp_path / "pets"
    _img(root / "cats" / "a.png", color=(10, 20, 30))
    _img(root / "cats" / "b.PNG", color=(10, 20, 30))
    _corrupt(root / "cats" / "broken.jpg")
    _img(root / "dogs" / "x.jpg", color=(250, 250, 250))
    _img(root / "dogs" / "deeper" / "y.bmp", color=(250, 250, 250))
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / "empty").mkdir()  # no images: not a class
    _img(root / ".hidden" / "z.png")  # hidden folders are ignored
    return root


# ---------------------------------------------------------------- names and splits


def test_unknown_dataset_lists_the_known_ones() -> None:
    for call in (lambda: splits_of("mnist"), lambda: default_splits("mnist"), lambda: load_split("mnist", "train")):
        with pytest.raises(UserError, match="digits, cifar10, stl10, folder"):
            call()


def test_fixed_dataset_splits() -> None:
    assert DATASETS == ("digits", "cifar10", "stl10", "folder")
    assert splits_of("digits") == ["train", "test", "all"]
    assert splits_of("cifar10") == ["train", "test"]
    assert set(splits_of("stl10")) == {"train", "test", "unlabeled", "train+unlabeled"}
    assert default_splits("digits") == ("train", "train", "test")
    assert default_splits("cifar10") == ("train", "train", "test")
    assert default_splits("stl10") == ("train+unlabeled", "train", "test")


def test_unknown_split_lists_offered_ones(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="train, test, all"):
        load_split("digits", "val")
    _img(tmp_path / "train" / "a" / "1.png")
    _img(tmp_path / "test" / "a" / "1.png")
    with pytest.raises(UserError, match="choose one of: train, test$"):
        load_split("folder", "all", path=str(tmp_path), data_dir=str(tmp_path / "d"))


@pytest.mark.parametrize(
    ("subdirs", "expected"),
    [
        (["train", "test"], ("train", "train", "test")),
        (["train", "val"], ("train", "train", "val")),
        (["train", "val", "test"], ("train", "train", "test")),
        (["train"], ("train", "train", None)),
        ([], ("all", "all", None)),
    ],
)
def test_folder_default_splits(tmp_path: Path, subdirs: list[str], expected: tuple) -> None:
    for sub in subdirs:
        _img(tmp_path / sub / "cat" / "1.png")
    if not subdirs:
        _img(tmp_path / "cat" / "1.png")
    assert splits_of("folder", str(tmp_path)) == [s for s in ("train", "val", "test") if s in subdirs] or ["all"]
    assert default_splits("folder", str(tmp_path)) == expected


def test_unlabelled_folder_has_no_knn_splits(tmp_path: Path) -> None:
    _img(tmp_path / "1.png")
    assert default_splits("folder", str(tmp_path)) == ("all", None, None)


def test_folder_path_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs --data-path"):
        splits_of("folder")
    with pytest.raises(UserError, match="does not exist"):
        load_split("folder", "all", path=str(tmp_path / "nope"))
    archive = tmp_path / "images.tar.gz"
    archive.write_bytes(b"x")
    with pytest.raises(UserError, match="not a folder"):
        default_splits("folder", str(archive))


# ---------------------------------------------------------------- digits


def test_digits_train_test_split() -> None:
    train, test, full = (load_split("digits", s) for s in ("train", "test", "all"))
    assert (len(train), len(test), len(full)) == (1437, 360, 1797)
    for s in (train, test):
        assert s.images.shape[1:] == (3, 32, 32) and s.images.dtype == torch.uint8 and s.images.is_contiguous()
        assert s.labels.dtype == torch.int64 and s.labels.min() == 0 and s.labels.max() == 9
        assert s.classes == [str(c) for c in range(10)] and s.labelled
    assert train.name == "digits/train"
    assert torch.bincount(test.labels, minlength=10).min() >= 30  # stratified: every class ~20 %
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey repeated into RGB
    assert full.images.max() == 255 and full.images.min() == 0
    assert torch.equal(load_split("digits", "test").images, test.images)


def test_digits_image_size_override() -> None:
    assert load_split("digits", "test", image_size=16).images.shape == (360, 3, 16, 16)
    with pytest.raises(UserError, match="image size"):
        load_split("digits", "test", image_size=0)


# ---------------------------------------------------------------- folders


def test_class_folders(classes_dir: Path, tmp_path: Path) -> None:
    s = load_split("folder", "all", path=str(classes_dir), data_dir=str(tmp_path / "d"))
    assert s.classes == ["cats", "dogs"]
    assert s.labels.tolist() == [0, 0, 1, 1]  # nested dogs/deeper/y.bmp belongs to dogs
    assert s.skipped == 1  # broken.jpg; notes.txt and hidden files are not counted
    assert s.images.shape == (4, 3, 16, 16) and s.images.dtype == torch.uint8
    assert s.labelled and len(s) == 4
    assert s.name == f"folder:{classes_dir.resolve()}"
    assert s.images[0, :, 0, 0].tolist() == [10, 20, 30]  # RGB order, channels first
    assert (s.images[0] == s.images[0, :, :1, :1]).all()


def test_folder_images_know_their_files(classes_dir: Path, tmp_path: Path) -> None:
    s = load_split("folder", "all", path=str(classes_dir), data_dir=str(tmp_path / "d"))
    root = classes_dir.resolve()
    # one path per decoded image, in row order; the corrupt file is skipped, so it has no row
    assert s.paths == [
        str(root / "cats" / "a.png"),
        str(root / "cats" / "b.PNG"),
        str(root / "dogs" / "deeper" / "y.bmp"),
        str(root / "dogs" / "x.jpg"),
    ]
    again = load_split("folder", "all", path=str(classes_dir), data_dir=str(tmp_path / "d"))  # from the cache
    assert again.paths == s.paths
    sub = load_split("folder", "all", path=str(classes_dir), data_dir=str(tmp_path / "d"), subset=2, seed=1)
    assert len(sub.paths) == 2 and set(sub.paths) <= set(s.paths)
    for i, path in enumerate(sub.paths):
        assert torch.equal(sub.images[i], s.images[s.paths.index(path)])
    assert load_split("digits", "test").paths is None  # bundled data has no files


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    _img(tmp_path / "imgs" / "a.png")
    _img(tmp_path / "imgs" / "b.jpeg")
    (tmp_path / "imgs" / "readme.txt").write_text("hi")
    s = load_split("folder", "all", path=str(tmp_path / "imgs"), data_dir=str(tmp_path / "d"))
    assert s.labels.tolist() == [-1, -1] and s.classes == [] and not s.labelled and s.skipped == 0


def test_loose_images_beside_class_folders_are_unlabelled(tmp_path: Path) -> None:
    _img(tmp_path / "x" / "cat" / "1.png")
    _img(tmp_path / "x" / "stray.png")
    s = load_split("folder", "all", path=str(tmp_path / "x"), data_dir=str(tmp_path / "d"))
    assert sorted(s.labels.tolist()) == [-1, 0] and s.classes == ["cat"] and not s.labelled


def test_train_test_layout(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("ant", "bee"):
            for i in range(n):
                _img(tmp_path / split / cls / f"{i}.png")
    train = load_split("folder", "train", path=str(tmp_path), data_dir=str(tmp_path / "d"))
    test = load_split("folder", "test", path=str(tmp_path), data_dir=str(tmp_path / "d"))
    assert (len(train), len(test)) == (6, 4)
    assert train.classes == test.classes == ["ant", "bee"]
    assert test.labels.tolist() == [0, 0, 1, 1]
    assert train.name.endswith("/train")


def test_image_modes_become_rgb(tmp_path: Path) -> None:
    _img(tmp_path / "m" / "grey.png", mode="L", color=77)
    _img(tmp_path / "m" / "alpha.png", mode="RGBA", color=(1, 2, 3, 0))
    _img(tmp_path / "m" / "palette.gif", mode="P", color=5)
    _img(tmp_path / "m" / "photo.webp")
    _img(tmp_path / "m" / "scan.TIFF", mode="CMYK", color=(0, 0, 0, 0))
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
        _img(tmp_path / "f" / f"{i}.png", size=size)
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


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.txt").write_text("x")
    with pytest.raises(UserError, match=r"no images found in .*point --data-path"):
        load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"))


def test_folder_of_unreadable_images(tmp_path: Path) -> None:
    _corrupt(tmp_path / "f" / "a.jpg")
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
        _img(tmp_path / "f" / f"{i:03d}.png", size=(8, 8), color=(i % 256, i // 256, 7))
    _corrupt(tmp_path / "f" / "150x.png")
    s = load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"))
    assert len(s) == 300 and s.skipped == 1
    assert s.images[:, 0, 0, 0].tolist() == [i % 256 for i in range(300)]
    assert s.images[:, 1, 0, 0].tolist() == [i // 256 for i in range(300)]


def test_interrupted_decode_leaves_no_files(tmp_path: Path) -> None:
    for i in range(200):
        _img(tmp_path / "f" / f"{i:03d}.png", size=(8, 8))

    def stop_midway(done: int, total: int) -> None:
        if done > 0:
            raise DecodeCalled  # e.g. the user pressed stop in the app

    with pytest.raises(DecodeCalled):
        load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"), progress=stop_midway)
    assert list((tmp_path / "d" / "cache").iterdir()) == []


def test_bad_entries_are_skipped_and_counted(
    classes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Symlink loops, broken links and unreadable folders used to crash the scan (CLI and app)."""
    (classes_dir / "cats" / "self.jpg").symlink_to("self.jpg")  # a loop, with an image's name
    (classes_dir / "cats" / "gone.png").symlink_to("nowhere.png")  # broken
    (classes_dir / "cats" / "notes.txt").symlink_to("nowhere.txt")  # not an image: ignored, as before
    (classes_dir / "birds").symlink_to(tmp_path / "unmounted")  # a broken link to a class folder
    (classes_dir / "loop1").symlink_to("loop2")
    (classes_dir / "loop2").symlink_to("loop1")
    private = _img(classes_dir / "dogs" / "private" / "p.png").parent
    if os.geteuid() != 0:
        private.chmod(0)
    else:  # root reads any folder: make this one fail as chmod 000 does for a user
        real = os.scandir

        def scandir(path: object = ".") -> object:
            if os.fspath(path) == str(private):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real(path)

        monkeypatch.setattr(data.os, "scandir", scandir)
    kw = {"path": str(classes_dir), "data_dir": str(tmp_path / "d")}
    caplog.set_level(logging.WARNING, logger="simclr_core.data")
    try:
        assert default_splits("folder", str(classes_dir)) == ("all", "all", None)
        s = load_split("folder", "all", **kw)
        monkeypatch.setattr(data, "_decode_folder", _no_decode)
        again = load_split("folder", "all", **kw)  # from the cache: the same count
    finally:
        private.chmod(0o755)
    assert s.classes == ["cats", "dogs"] and s.labels.tolist() == [0, 0, 1, 1] and len(s) == 4
    assert s.skips == {"broken_link": 2, "symlink_loop": 3, "unreadable_folder": 1, "unreadable_image": 1}
    assert s.skipped == 7 and (again.skips, again.skipped, again.notes) == (s.skips, s.skipped, s.notes)
    assert s.skip_examples["unreadable_folder"] == "dogs/private" and s.skip_examples["broken_link"] == "birds"
    assert s.notes == [
        (
            f"skipped 7 unreadable entries in {classes_dir.resolve()} (2 broken links, e.g. birds; 3 symlink loops, "
            "e.g. loop1; 1 unreadable folder, e.g. dogs/private; 1 unreadable image, e.g. cats/broken.jpg)"
        )
    ]
    assert [r.getMessage() for r in caplog.records].count(s.notes[0]) == 1  # logged once, not at every load


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
    monkeypatch.setattr(data, "MAX_PIXELS", 1_000_000)  # stands in for 64 MP, to keep the test fast
    _img(tmp_path / "f" / "photo.jpg", size=(2000, 2000), color=(0, 200, 0))  # 4 MP, but decodes at 1/8
    _img(tmp_path / "f" / "poster.png", size=(2000, 2000))  # 4 MP, no reduced decoding: too large
    _img(tmp_path / "f" / "small.png", color=(1, 2, 3))
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
    assert data._decode_one(str(tmp_path / "f" / "photo.jpg"), None).shape == (500, 500, 3)  # native: > 256 kept
    assert data._decode_one(str(tmp_path / "f" / "poster.png"), 16, max_pixels=10**6) == "too_large"
    (tmp_path / "f" / "photo.jpg").unlink()
    (tmp_path / "f" / "small.png").unlink()
    with pytest.raises(UserError, match=r"none of the 1 image files .*1 image over 1 megapixels.*at most 1 megapixels"):
        load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"))


# ---------------------------------------------------------------- cache


def test_second_load_comes_from_the_cache(classes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = {"path": str(classes_dir), "data_dir": str(tmp_path / "d")}
    first = load_split("folder", "all", **kw)
    assert len(list((tmp_path / "d" / "cache").glob("*.npy"))) == 2  # images and labels
    monkeypatch.setattr(data, "_decode_folder", _no_decode)
    second = load_split("folder", "all", **kw)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert (second.classes, second.skipped, second.name) == (first.classes, first.skipped, first.name)
    before = first.images.clone()
    second.images[0].zero_()  # copy-on-write: edits never reach the cache file
    assert torch.equal(load_split("folder", "all", **kw).images, before) and before[0].any()


@pytest.mark.parametrize("change", ["add", "modify", "image_size"])
def test_cache_is_invalidated(classes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    kw = {"path": str(classes_dir), "data_dir": str(tmp_path / "d")}
    load_split("folder", "all", **kw)
    monkeypatch.setattr(data, "_decode_folder", _no_decode)
    if change == "add":
        _img(classes_dir / "cats" / "c.png")
    elif change == "modify":
        _img(classes_dir / "cats" / "a.png", size=(40, 40))
    else:
        kw["image_size"] = 8
    with pytest.raises(DecodeCalled):
        load_split("folder", "all", **kw)


def test_damaged_cache_is_rebuilt(classes_dir: Path, tmp_path: Path) -> None:
    kw = {"path": str(classes_dir), "data_dir": str(tmp_path / "d")}
    first = load_split("folder", "all", **kw).images.clone()  # a copy: the map dies with the file
    for f in (tmp_path / "d" / "cache").glob("*.npy"):
        f.write_bytes(b"garbage")
    assert torch.equal(load_split("folder", "all", **kw).images, first)


def test_unwritable_cache_dir_means_no_cache(classes_dir: Path, tmp_path: Path) -> None:
    reference = load_split("folder", "all", path=str(classes_dir), data_dir=str(tmp_path / "d"))
    (tmp_path / "file").write_text("x")  # a --data-dir that is a file: no cache folder can exist in it
    s = load_split("folder", "all", path=str(classes_dir), data_dir=str(tmp_path / "file"))
    assert torch.equal(s.images, reference.images) and s.paths == reference.paths and s.skipped == 1
    assert any(n.startswith("not caching the decoded images") and "writable --data-dir" in n for n in s.notes)
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        (tmp_path / "ro" / "cache").mkdir(parents=True)
        (tmp_path / "ro" / "cache").chmod(0o555)
        try:
            s = load_split("folder", "all", path=str(classes_dir), data_dir=str(tmp_path / "ro"))
        finally:
            (tmp_path / "ro" / "cache").chmod(0o755)
        assert torch.equal(s.images, reference.images) and "Permission denied" in s.notes[-1]
        assert list((tmp_path / "ro" / "cache").iterdir()) == []


def _cache_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "cache").iterdir()) if (data_dir / "cache").is_dir() else []


@pytest.mark.parametrize("failure", ["precheck", "fallocate", "write"])
def test_full_disk_keeps_images_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    """A full disk was a SIGBUS (the cache was written through a memory map) that left its temp file."""
    for i in range(300):  # several worker chunks: rows already written are read back from the file
        _img(tmp_path / "f" / f"{i:03d}.png", size=(8, 8), color=(i % 256, i // 256, 7))
    kw = {"path": str(tmp_path / "f"), "data_dir": str(tmp_path / "d")}
    if failure == "precheck":
        usage = data.shutil.disk_usage(tmp_path)
        monkeypatch.setattr(data.shutil, "disk_usage", lambda p: usage._replace(free=2**20))
    elif failure == "fallocate":

        def no_space(fd: int, offset: int, length: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(data.os, "posix_fallocate", no_space)
    else:
        real, calls = data._write_all, []

        def fill_up(fd: int, view: memoryview) -> None:
            calls.append(len(view))
            if len(calls) == 3:  # the header and a first chunk went in; the disk fills up on the second
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd, view)

        monkeypatch.setattr(data, "_write_all", fill_up)
    s = load_split("folder", "all", **kw)
    assert len(s) == 300 and s.images[:, 0, 0, 0].tolist() == [i % 256 for i in range(300)]
    assert s.images[:, 1, 0, 0].tolist() == [i // 256 for i in range(300)] and s.paths[-1].endswith("299.png")
    assert len(s.notes) == 1 and s.notes[0].startswith("not caching the decoded images")
    assert re.search(r"free \d+ MB on /\S* or pass a --data-dir on a disk with room", s.notes[0])
    assert _cache_files(tmp_path / "d") == []  # no temp file left to keep the disk full
    monkeypatch.setattr(data, "_available_memory", lambda: 1000)  # and when memory cannot hold them either:
    if failure == "write":
        calls.clear()
    with pytest.raises(UserError, match=r"do not fit in memory .*: free \d+ MB on /"):
        load_split("folder", "all", **kw)
    assert _cache_files(tmp_path / "d") == []


def test_cache_temp_names_carry_the_pid(tmp_path: Path) -> None:
    for i in range(100):
        _img(tmp_path / "f" / f"{i:03d}.png", size=(8, 8))
    seen: list[list[str]] = []
    load_split(
        "folder",
        "all",
        path=str(tmp_path / "f"),
        data_dir=str(tmp_path / "d"),
        progress=lambda done, total: seen.append(_cache_files(tmp_path / "d")),
    )
    during = {name for names in seen for name in names}
    assert during and all(re.fullmatch(rf"\..+\.{os.getpid()}\.tmp\.npy", n) for n in during)
    assert all(not n.startswith(".") for n in _cache_files(tmp_path / "d"))


def test_stale_temps_of_dead_writers_are_removed(classes_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "d" / "cache"
    cache.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (cache / f".folder-pets-all-0123456789abcdef-a1b2c3d4.{dead.pid}.tmp.npy").write_bytes(b"x" * 1000)
    (cache / f".other-0123456789abcdef-a1b2c3d4-labels.{dead.pid}.tmp.npy").write_bytes(b"x")
    live = cache / f".other-0123456789abcdef-a1b2c3d4.{os.getpid()}.tmp.npy"  # this process: maybe a thread's
    live.write_bytes(b"x")
    legacy = cache / "folder-pets-all-0123456789abcdef.0123456789ab.tmp.npy"  # cache version 2's, without pid
    legacy.write_bytes(b"x")
    os.utime(legacy, (time.time() - 7200, time.time() - 7200))
    load_split("folder", "all", path=str(classes_dir), data_dir=str(tmp_path / "d"))
    assert [n for n in _cache_files(tmp_path / "d") if "tmp" in n] == [live.name]


def test_sigterm_during_decode_removes_the_temp_file(tmp_path: Path) -> None:
    """SIGTERM during a folder decode used to kill the process at once and leave the temp .npy behind."""
    for i in range(200):
        _img(tmp_path / "f" / f"{i:03d}.png", size=(8, 8))
    script = (
        "import os, signal, sys\n"
        "from simclr_core.data import load_split\n"
        "def progress(done, total):\n"
        "    if done:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "load_split('folder', 'all', path=sys.argv[1], data_dir=sys.argv[2], progress=progress)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "f"), str(tmp_path / "d")],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode not in (0, -signal.SIGTERM), proc.stderr
    assert "KeyboardInterrupt: stopped by SIGTERM while decoding images" in proc.stderr
    assert _cache_files(tmp_path / "d") == []


# ---------------------------------------------------------------- subsets and holdout


def test_subset_is_a_sorted_deterministic_sample(tmp_path: Path) -> None:
    for i in range(40):
        _img(tmp_path / "f" / f"{i:02d}.png", size=(4, 4), color=(i, 0, 0))
    kw = {"path": str(tmp_path / "f"), "data_dir": str(tmp_path / "d")}

    def reds(seed: int) -> list[int]:
        return load_split("folder", "all", subset=10, seed=seed, **kw).images[:, 0, 0, 0].tolist()

    assert len(reds(0)) == 10 and reds(0) == sorted(set(reds(0)))  # distinct rows, in folder order
    assert reds(0) == reds(0) and reds(1) != reds(0)
    assert len(load_split("folder", "all", subset=100, **kw)) == 40
    with pytest.raises(UserError, match="subset"):
        load_split("folder", "all", subset=0, **kw)


def test_holdout_partitions_range() -> None:
    bank, query = holdout(100, 0.2, seed=3)
    assert (len(bank), len(query)) == (80, 20)
    assert bank.dtype == query.dtype == torch.int64
    assert torch.equal(torch.cat([bank, query]).sort().values, torch.arange(100))
    assert torch.equal(bank, bank.sort().values) and torch.equal(query, query.sort().values)
    assert torch.equal(holdout(100, 0.2, seed=3)[1], query)
    assert not torch.equal(holdout(100, 0.2, seed=4)[1], query)
    assert [len(t) for t in holdout(2, 0.01)] == [1, 1]


@pytest.mark.parametrize(
    ("n", "fraction", "match"), [(10, 0.0, "fraction"), (10, 1.0, "fraction"), (1, 0.2, "at least 2")]
)
def test_holdout_errors(n: int, fraction: float, match: str) -> None:
    with pytest.raises(UserError, match=match):
        holdout(n, fraction)


def test_labelled_property() -> None:
    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    assert ImageSet(images, torch.tensor([0, 1, 0]), ["a", "b"], "x").labelled
    assert not ImageSet(images, torch.tensor([0, -1, 0]), ["a", "b"], "x").labelled
    assert not ImageSet(images, torch.tensor([0, 0, 0]), [], "x").labelled
    assert len(ImageSet(images, torch.tensor([0, 0, 0]), [], "x")) == 3


# ---------------------------------------------------------------- torchvision datasets (faked: no network)


class FakeCIFAR10:
    def __init__(self, root: str, train: bool, download: bool) -> None:
        rng = np.random.default_rng(int(train))
        self.data = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)  # NHWC, as torchvision keeps it
        self.targets = [0, 1, 2, 3, 4, 5]
        self.classes = [f"c{i}" for i in range(10)]


class FakeSTL10:
    def __init__(self, root: str, split: str, download: bool) -> None:
        n_lab, n_unl = (4 if "train" in split else 0), (3 if "unlabeled" in split else 0)
        self.data = np.zeros((n_lab + n_unl, 3, 96, 96), dtype=np.uint8)
        self.labels = np.array([1] * n_lab + [-1] * n_unl)
        self.classes = ["airplane", "bird"]


class OfflineDataset:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")


def test_cifar10_converted_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torchvision.datasets.CIFAR10", FakeCIFAR10)
    s = load_split("cifar10", "test", data_dir=str(tmp_path))
    assert s.images.shape == (6, 3, 32, 32) and s.images.dtype == torch.uint8 and s.images.is_contiguous()
    assert torch.equal(s.images[2], torch.from_numpy(FakeCIFAR10("", False, False).data[2]).permute(2, 0, 1))
    assert s.labels.tolist() == [0, 1, 2, 3, 4, 5] and s.classes[0] == "c0" and s.name == "cifar10/test"
    monkeypatch.setattr("torchvision.datasets.CIFAR10", OfflineDataset)
    assert torch.equal(load_split("cifar10", "test", data_dir=str(tmp_path)).images, s.images)
    assert load_split("cifar10", "test", data_dir=str(tmp_path), subset=3).images.shape == (3, 3, 32, 32)
    with pytest.raises(UserError, match="offline"):  # another size is not cached yet
        load_split("cifar10", "test", data_dir=str(tmp_path), image_size=16)


def test_cifar10_resized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torchvision.datasets.CIFAR10", FakeCIFAR10)
    assert load_split("cifar10", "train", data_dir=str(tmp_path), image_size=16).images.shape == (6, 3, 16, 16)


def test_stl10_unlabelled_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torchvision.datasets.STL10", FakeSTL10)
    unl = load_split("stl10", "unlabeled", data_dir=str(tmp_path))
    assert unl.images.shape == (3, 3, 96, 96) and unl.labels.tolist() == [-1] * 3 and unl.classes == []
    both = load_split("stl10", "train+unlabeled", data_dir=str(tmp_path))
    assert both.labels.tolist() == [1] * 4 + [-1] * 3 and both.classes == ["airplane", "bird"] and not both.labelled
    assert load_split("stl10", "train", data_dir=str(tmp_path)).labelled


@pytest.mark.parametrize("dataset", ["cifar10", "stl10"])
def test_offline_download_names_the_alternatives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str) -> None:
    monkeypatch.setattr("torchvision.datasets.CIFAR10", OfflineDataset)
    monkeypatch.setattr("torchvision.datasets.STL10", OfflineDataset)
    with pytest.raises(UserError, match=r"could not be downloaded \(offline\?\).*--dataset folder.*--dataset digits"):
        load_split(dataset, "test", data_dir=str(tmp_path))


def test_missing_dataset_without_download(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="CIFAR-10 is not in .*downloading is off.*--dataset digits"):
        load_split("cifar10", "train", data_dir=str(tmp_path), download=False)


# ---------------------------------------------------------------- the real CIFAR-10 JPEG folder, when present


@pytest.mark.shared_data
@pytest.mark.skipif(not CIFAR_TAR.exists(), reason=f"{CIFAR_TAR} not present")
def test_real_cifar10_jpeg_test_split(tmp_path: Path) -> None:
    with tarfile.open(CIFAR_TAR) as tar:
        members = [m for m in tar if m.name.lstrip("./").startswith("test/")]
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp_path / "cifar", members=members, **extra)
    s = load_split("folder", "test", path=str(tmp_path / "cifar"), data_dir=str(tmp_path / "d"))
    assert s.images.shape == (10_000, 3, 32, 32) and s.skipped == 0
    assert len(s.classes) == 10 and "airplane" in s.classes
    assert torch.bincount(s.labels).tolist() == [1000] * 10


# ---- issue 16: names that are not UTF-8, and a resize that does not fit in memory ---------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are bytes; others are Unicode")
def test_file_names_that_are_not_utf8_are_read_counted_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b'\\xff.png' came back from scandir as '\\udcff.png', which the cache key's encode() refused."""
    root = str(tmp_path / "imgs")
    for cls, color in ((b"cats", (200, 30, 60)), (b"d\xffogs", (20, 30, 200))):
        for name in (b"a.png", b"\xff.png", b"b\xfe\xfd.png"):
            _img(Path(os.fsdecode(os.path.join(os.fsencode(root), cls, name))), color=color)
    _corrupt(Path(os.fsdecode(os.path.join(os.fsencode(root), b"cats", b"bad\xfe.png"))))
    first = load_split("folder", "all", path=root, data_dir=str(tmp_path / "data"))
    assert len(first) == 6 and first.classes == ["cats", "d\udcffogs"] and first.labels.tolist() == [0] * 3 + [1] * 3
    assert first.paths is not None and all(os.path.isfile(p) for p in first.paths)  # each path opens its file
    assert os.path.join(root, "d\udcffogs", "\udcff.png") in first.paths
    assert first.skipped == 1 and first.notes[0].endswith("(1 unreadable image, e.g. cats/bad\\xfe.png)")
    first.notes[0].encode("utf-8")  # printable: the log and train.log write it as text
    monkeypatch.setattr(data, "_decode_folder", _no_decode)
    again = load_split("folder", "all", path=root, data_dir=str(tmp_path / "data"))  # from the cache's JSON
    assert again.paths == first.paths and again.classes == first.classes
    assert torch.equal(again.images, first.images)


def test_a_resize_that_does_not_fit_in_memory_names_an_image_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_available_memory", lambda: 2 * 10**9)  # 2 GB free
    with pytest.raises(UserError) as e:
        load_split("digits", "train", image_size=1024)  # 1,437 images x 3 MB: 4.3 GB
    assert str(e.value) == (
        "--image-size 1024 makes the 1437 images take 4,311 MB of memory, and 1,908 MB are free; "
        "use --image-size 480 or less"
    )
    assert load_split("digits", "train", image_size=480).images.shape[-1] == 480  # the advice fits
