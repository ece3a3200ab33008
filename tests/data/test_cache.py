"""Tests for simclr_core.data.cache: reuse, invalidation, damage, no room or no rights on disk, temp files."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from simclr_core.data import cache, decode
from simclr_core.data.datasets import load_split
from simclr_core.errors import UserError

from tests.data.common import DecodeCalled, cache_files, no_decode, write_image


def test_second_load_comes_from_the_cache(classes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = {"path": str(classes_dir), "data_dir": str(tmp_path / "d")}
    first = load_split("folder", "all", **kw)
    assert len(list((tmp_path / "d" / "cache").glob("*.npy"))) == 2  # images and labels
    monkeypatch.setattr(decode, "decode_folder", no_decode)
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
    monkeypatch.setattr(decode, "decode_folder", no_decode)
    if change == "add":
        write_image(classes_dir / "cats" / "c.png")
    elif change == "modify":
        write_image(classes_dir / "cats" / "a.png", size=(40, 40))
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


@pytest.mark.parametrize("failure", ["precheck", "fallocate", "write"])
def test_full_disk_keeps_images_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    """A full disk was a SIGBUS (the cache was written through a memory map) that left its temp file."""
    for i in range(300):  # several worker chunks: rows already written are read back from the file
        write_image(tmp_path / "f" / f"{i:03d}.png", size=(8, 8), color=(i % 256, i // 256, 7))
    kw = {"path": str(tmp_path / "f"), "data_dir": str(tmp_path / "d")}
    if failure == "precheck":
        usage = cache.shutil.disk_usage(tmp_path)
        monkeypatch.setattr(cache.shutil, "disk_usage", lambda p: usage._replace(free=2**20))
    elif failure == "fallocate":

        def no_space(fd: int, offset: int, length: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(cache.os, "posix_fallocate", no_space)
    else:
        real, calls = cache._write_all, []

        def fill_up(fd: int, view: memoryview) -> None:
            calls.append(len(view))
            if len(calls) == 3:  # the header and a first chunk went in; the disk fills up on the second
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd, view)

        monkeypatch.setattr(cache, "_write_all", fill_up)
    s = load_split("folder", "all", **kw)
    assert len(s) == 300 and s.images[:, 0, 0, 0].tolist() == [i % 256 for i in range(300)]
    assert s.images[:, 1, 0, 0].tolist() == [i // 256 for i in range(300)] and s.paths[-1].endswith("299.png")
    assert len(s.notes) == 1 and s.notes[0].startswith("not caching the decoded images")
    assert re.search(r"free \d+ MB on /\S* or pass a --data-dir on a disk with room", s.notes[0])
    assert cache_files(tmp_path / "d") == []  # no temp file left to keep the disk full
    monkeypatch.setattr(cache, "_available_memory", lambda: 1000)  # and when memory cannot hold them either:
    if failure == "write":
        calls.clear()
    with pytest.raises(UserError, match=r"do not fit in memory .*: free \d+ MB on /"):
        load_split("folder", "all", **kw)
    assert cache_files(tmp_path / "d") == []


def test_cache_temp_names_carry_the_pid(tmp_path: Path) -> None:
    for i in range(100):
        write_image(tmp_path / "f" / f"{i:03d}.png", size=(8, 8))
    seen: list[list[str]] = []
    load_split(
        "folder",
        "all",
        path=str(tmp_path / "f"),
        data_dir=str(tmp_path / "d"),
        progress=lambda done, total: seen.append(cache_files(tmp_path / "d")),
    )
    during = {name for names in seen for name in names}
    assert during and all(re.fullmatch(rf"\..+\.{os.getpid()}\.tmp\.npy", n) for n in during)
    assert all(not n.startswith(".") for n in cache_files(tmp_path / "d"))


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
    assert [n for n in cache_files(tmp_path / "d") if "tmp" in n] == [live.name]


def test_sigterm_during_decode_removes_the_temp_file(tmp_path: Path) -> None:
    """SIGTERM during a folder decode used to kill the process at once and leave the temp .npy behind."""
    for i in range(200):
        write_image(tmp_path / "f" / f"{i:03d}.png", size=(8, 8))
    script = (
        "import os, signal, sys\n"
        "from simclr_core.data.datasets import load_split\n"
        "def progress(done, total):\n"
        "    if done:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "load_split('folder', 'all', path=sys.argv[1], data_dir=sys.argv[2], progress=progress)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "f"), str(tmp_path / "d")],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode not in (0, -signal.SIGTERM), proc.stderr
    assert "KeyboardInterrupt: stopped by SIGTERM while decoding images" in proc.stderr
    assert cache_files(tmp_path / "d") == []
