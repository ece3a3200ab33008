"""One small image file per image of a split, for a browser to fetch when the pointer rests on a point.

The explorer's map sends only coordinates and row numbers; a point's tooltip names
``<folder>/<row>.<ext>``, which the browser loads once and then keeps in its cache. So the pixels
cross the network once per split, however often the page reruns. Lossless PNG at zlib level 1 for
small images (the map enlarges them with sharp pixels), JPEG above 64 px. Each file takes one
file-system block whatever its format (a 32 px PNG is 2.2 KB, lossless WebP 1.6 KB, a block 4 KiB;
BENCHMARKS.md), so the folder's size is set by the number of images, and held by the cap below.

:class:`ThumbnailStore` owns the folder (the app's ``static/thumbs``): one set per split's pixels,
written once, and the whole folder held under a cap (``SIMCLR_THUMBS_MAX_MB``, default 1024 MB) by
evicting the sets used least recently. A set's last use is its folder's mtime, which
:meth:`ThumbnailStore.write` and :meth:`ThumbnailStore.touch` set.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from simclr_core.data.datasets import ImageSet
from simclr_core.errors import UserError
from simclr_core.files import remove_stale_temps

__all__ = ["MAX_MB_ENV", "ThumbSet", "ThumbnailStore", "cap_bytes", "digest", "extension", "write_thumbnails"]

LOSSLESS_MAX = 64  # PNG up to this side (CIFAR, digits); JPEG above (STL-10, photos)
MAX_MB_ENV = "SIMCLR_THUMBS_MAX_MB"
DEFAULT_MAX_MB = 1024  # five CIFAR-10 train sets (197 MB each on a 4 KiB-block disk)
MB = 2**20  # as `du -m` counts
IN_USE_S = 600.0  # a set written or touched this recently is on someone's map: never evicted
SET_NAME = re.compile(r"^[0-9a-f]{16}$")  # what digest() names; nothing else in the folder is ours to delete


def digest(images: ImageSet) -> str:
    """A name for this split's pixels: its name, shape and a sample of rows (changes when they change)."""
    x = images.images
    sample = x[:: max(1, len(x) // 64)].numpy().tobytes() if len(x) else b""
    h = hashlib.sha1(f"{images.name}|{tuple(x.shape)}".encode() + sample)
    return h.hexdigest()[:16]


def extension(images: ImageSet) -> str:
    """The file extension :meth:`ThumbnailStore.write` uses for this split."""
    return "png" if images.images.shape[-1] <= LOSSLESS_MAX else "jpg"


def cap_bytes() -> int:
    """The thumbnails' cap in bytes: ``SIMCLR_THUMBS_MAX_MB`` megabytes (2**20 bytes), or 1024 MB."""
    raw = os.environ.get(MAX_MB_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_MB * MB
    try:
        mb = float(raw)
    except ValueError:
        mb = math.nan
    if not (math.isfinite(mb) and mb >= 0):
        raise UserError(
            f"{MAX_MB_ENV}={raw!r} is not a size: set it to the megabytes the map's thumbnails may take "
            f"(e.g. {MAX_MB_ENV}=500; 0 keeps only the sets in use), or unset it for {DEFAULT_MAX_MB} MB"
        )
    return int(mb * MB)


def _disk_bytes(st: os.stat_result) -> int:
    """What a file takes on disk, as du counts it: whole blocks (a 1.6 KB image takes 4 KiB on ext4)."""
    blocks = getattr(st, "st_blocks", None)  # absent on Windows
    return st.st_size if blocks is None else blocks * 512


def _folder_bytes(folder: Path) -> tuple[int, int]:
    """(bytes on disk, files) of a folder of thumbnails and its own entries; (0, 0) if it is gone."""
    try:
        total, files = _disk_bytes(folder.stat()), 0
        with os.scandir(folder) as entries:
            for e in entries:
                total += _disk_bytes(e.stat(follow_symlinks=False))
                files += 1
    except OSError:  # removed meanwhile by another process's eviction
        return 0, 0
    return total, files


@dataclass(frozen=True)
class ThumbSet:
    """One split's thumbnails in the store."""

    name: str
    path: Path
    bytes: int  # on disk, in whole blocks
    files: int
    used: float  # last use (seconds since the epoch): the folder's mtime


class ThumbnailStore:
    """The thumbnails folder: one set of files per split's pixels, the whole held under a cap.

    Writing a new set evicts whole sets, least recently used first, until the sets fit under
    ``max_bytes``; never the set just written, nor one used in the last ``in_use_s`` seconds (a map
    someone looks at now), so the cap may be exceeded while they are in use. Temp folders of writers
    that died (kill -9 mid-write) are removed. A set appears and disappears by a rename, so neither a
    browser nor another process writing to the folder ever sees half of one.
    """

    def __init__(self, root: str | Path, max_bytes: int | None = None, in_use_s: float = IN_USE_S):
        self.root = Path(root)
        self._max_bytes = max_bytes
        self.in_use_s = in_use_s

    @property
    def max_bytes(self) -> int:
        """The cap: as given, else :func:`cap_bytes`; read when needed, so a page that only touches or
        sizes the folder never fails on a mistyped ``SIMCLR_THUMBS_MAX_MB`` (the writing job says so)."""
        return cap_bytes() if self._max_bytes is None else self._max_bytes

    def write(self, images: ImageSet, progress: Callable[[int, int], None] | None = None) -> Path:
        """``root/<digest>/<row>.<ext>`` for every row of ``images``, written once; returns the folder.

        The files go to a temporary folder that is renamed into place when complete, so a reader never
        finds half a set, and a set that exists is not written again (only its use is recorded). After
        a new set is written, older sets are evicted to keep the folder under the cap.
        """
        name = digest(images)
        out = self.root / name
        if self.touch(name):
            return out
        cap = self.max_bytes  # a mistyped SIMCLR_THUMBS_MAX_MB fails here, before minutes of writing
        self.remove_stale_temps()  # space a killed writer left, before a new set takes more
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        ext, n = extension(images), len(images)
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            self._write_files(images, tmp, ext, progress)
            try:
                os.replace(tmp, out)
            except OSError:  # another writer finished first: theirs is as good as ours
                if not out.is_dir():
                    raise
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise UserError(
                f"the disk holding {self.root} is full: free some space, or lower {MAX_MB_ENV} "
                f"(now {cap // MB} MB) so fewer sets of the map's thumbnails are kept ({n:,} to write)"
            ) from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.touch(name)
        self.evict(keep=[name])
        return out

    @staticmethod
    def _write_files(images: ImageSet, folder: Path, ext: str, progress: Callable[[int, int], None] | None) -> None:
        n = len(images)
        for i in range(n):
            pic = Image.fromarray(np.ascontiguousarray(images.images[i].numpy().transpose(1, 2, 0)))
            if ext == "png":  # level 1: the fastest, and as small as level 9 on CIFAR (BENCHMARKS.md)
                pic.save(folder / f"{i}.png", optimize=False, compress_level=1)
            else:
                pic.save(folder / f"{i}.jpg", quality=90)
            if progress and (i % 1000 == 999 or i == n - 1):
                progress(i + 1, n)

    def touch(self, name: str) -> bool:
        """Record that set ``name`` is used now (the page shows it); False if there is no such set."""
        path = self.root / name
        if not SET_NAME.match(name) or not path.is_dir():
            return False
        try:
            os.utime(path)
        except OSError:  # evicted meanwhile, or a read-only folder: the set (if any) is still good to show
            return path.is_dir()
        return True

    def sets(self) -> list[ThumbSet]:
        """The complete sets, least recently used first."""
        try:
            with os.scandir(self.root) as it:
                entries = [e for e in it if SET_NAME.match(e.name) and e.is_dir(follow_symlinks=False)]
        except OSError:  # no folder yet
            return []
        found = []
        for e in entries:
            try:
                used = e.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            size, files = _folder_bytes(Path(e.path))
            found.append(ThumbSet(e.name, Path(e.path), size, files, used))
        return sorted(found, key=lambda s: (s.used, s.name))

    def size(self) -> int:
        """Bytes on disk of everything in the folder: the sets and any temp folders being written."""
        try:
            with os.scandir(self.root) as it:
                entries = list(it)
        except OSError:
            return 0
        total = 0
        for e in entries:
            try:
                total += _folder_bytes(Path(e.path))[0] if e.is_dir(follow_symlinks=False) else _disk_bytes(e.stat())
            except OSError:
                continue
        return total

    def evict(self, keep: Iterable[str] = ()) -> list[str]:
        """Remove sets, least recently used first, until the rest fit under the cap; returns their names.

        ``keep`` and the sets used in the last ``in_use_s`` seconds stay whatever their size.
        """
        keep = set(keep)
        sets = self.sets()
        over = sum(s.bytes for s in sets) - self.max_bytes
        now = time.time()
        removed = []
        for s in sets:
            if over <= 0:
                break
            if s.name in keep or now - s.used < self.in_use_s:
                continue
            # renamed first, so a browser asking meanwhile gets a missing file, never half a set; the
            # temp name carries our pid, so a kill mid-delete leaves what remove_stale_temps clears
            gone = self.root / f".{s.name}.evicted.{os.getpid()}.tmp"
            try:
                os.rename(s.path, gone)
            except OSError:  # another process evicted it first
                continue
            shutil.rmtree(gone, ignore_errors=True)
            over -= s.bytes
            removed.append(s.name)
        return removed

    def remove_stale_temps(self) -> int:
        """Delete the temp folders of writers (and evictions) whose process has died; returns how many."""
        return remove_stale_temps(self.root)


def write_thumbnails(images: ImageSet, root: str | Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """:meth:`ThumbnailStore.write` into ``root`` under the cap of ``SIMCLR_THUMBS_MAX_MB``."""
    return ThumbnailStore(root).write(images, progress)
