"""Tests for simclr_core.data.folder: class folders, files, entries skipped and names that are not UTF-8."""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path

import pytest
import torch

from simclr_core.data import decode, folder
from simclr_core.data.datasets import default_splits, load_split
from simclr_core.errors import UserError

from tests.data.common import no_decode, write_corrupt, write_image


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
    write_image(tmp_path / "imgs" / "a.png")
    write_image(tmp_path / "imgs" / "b.jpeg")
    (tmp_path / "imgs" / "readme.txt").write_text("hi")
    s = load_split("folder", "all", path=str(tmp_path / "imgs"), data_dir=str(tmp_path / "d"))
    assert s.labels.tolist() == [-1, -1] and s.classes == [] and not s.labelled and s.skipped == 0


def test_loose_images_beside_class_folders_are_unlabelled(tmp_path: Path) -> None:
    write_image(tmp_path / "x" / "cat" / "1.png")
    write_image(tmp_path / "x" / "stray.png")
    s = load_split("folder", "all", path=str(tmp_path / "x"), data_dir=str(tmp_path / "d"))
    assert sorted(s.labels.tolist()) == [-1, 0] and s.classes == ["cat"] and not s.labelled


def test_train_test_layout(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("ant", "bee"):
            for i in range(n):
                write_image(tmp_path / split / cls / f"{i}.png")
    train = load_split("folder", "train", path=str(tmp_path), data_dir=str(tmp_path / "d"))
    test = load_split("folder", "test", path=str(tmp_path), data_dir=str(tmp_path / "d"))
    assert (len(train), len(test)) == (6, 4)
    assert train.classes == test.classes == ["ant", "bee"]
    assert test.labels.tolist() == [0, 0, 1, 1]
    assert train.name.endswith("/train")


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.txt").write_text("x")
    with pytest.raises(UserError, match=r"no images found in .*point --data-path"):
        load_split("folder", "all", path=str(tmp_path / "f"), data_dir=str(tmp_path / "d"))


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
    private = write_image(classes_dir / "dogs" / "private" / "p.png").parent
    if os.geteuid() != 0:
        private.chmod(0)
    else:  # root reads any folder: make this one fail as chmod 000 does for a user
        real = os.scandir

        def scandir(path: object = ".") -> object:
            if os.fspath(path) == str(private):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real(path)

        monkeypatch.setattr(folder.os, "scandir", scandir)
    kw = {"path": str(classes_dir), "data_dir": str(tmp_path / "d")}
    caplog.set_level(logging.WARNING, logger="simclr_core.data.datasets")
    try:
        assert default_splits("folder", str(classes_dir)) == ("all", "all", None)
        s = load_split("folder", "all", **kw)
        monkeypatch.setattr(decode, "decode_folder", no_decode)
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


# ---- issue 16: names that are not UTF-8 ----------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are bytes; others are Unicode")
def test_file_names_that_are_not_utf8_are_read_counted_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b'\\xff.png' came back from scandir as '\\udcff.png', which the cache key's encode() refused."""
    root = str(tmp_path / "imgs")
    for cls, color in ((b"cats", (200, 30, 60)), (b"d\xffogs", (20, 30, 200))):
        for name in (b"a.png", b"\xff.png", b"b\xfe\xfd.png"):
            write_image(Path(os.fsdecode(os.path.join(os.fsencode(root), cls, name))), color=color)
    write_corrupt(Path(os.fsdecode(os.path.join(os.fsencode(root), b"cats", b"bad\xfe.png"))))
    first = load_split("folder", "all", path=root, data_dir=str(tmp_path / "data"))
    assert len(first) == 6 and first.classes == ["cats", "d\udcffogs"] and first.labels.tolist() == [0] * 3 + [1] * 3
    assert first.paths is not None and all(os.path.isfile(p) for p in first.paths)  # each path opens its file
    assert os.path.join(root, "d\udcffogs", "\udcff.png") in first.paths
    assert first.skipped == 1 and first.notes[0].endswith("(1 unreadable image, e.g. cats/bad\\xfe.png)")
    first.notes[0].encode("utf-8")  # printable: the log and train.log write it as text
    monkeypatch.setattr(decode, "decode_folder", no_decode)
    again = load_split("folder", "all", path=root, data_dir=str(tmp_path / "data"))  # from the cache's JSON
    assert again.paths == first.paths and again.classes == first.classes
    assert torch.equal(again.images, first.images)
