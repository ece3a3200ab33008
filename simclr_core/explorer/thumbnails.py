"""The map's thumbnails as sprite atlases: a few large images per split, for a browser to fetch when the
pointer rests on a point.

The explorer's map sends only coordinates and row numbers. A split's thumbnails are written once, by the
background worker, into a set folder ``<root>/<name>/``::

    atlas.json     {"tile": T, "cols": C, "count": N, "files": K, "ext": "png" | "jpg" | "webp"}
    atlas-0.<ext>  rows 0 .. C*C-1
    atlas-1.<ext>  rows C*C .. 2*C*C-1, ...

Row ``r`` lives in ``atlas-<r // (C*C)>``, at tile ``j = r % (C*C)``: pixels ``x = (j % C) * T``,
``y = (j // C) * T``, ``T`` by ``T``. Every atlas is ``C*T`` pixels wide; the last one has only the rows
of tiles it needs. The browser fetches an atlas once and then crops every tooltip from it. A million
CIFAR images are 977 atlases: 2.06 GB as PNG, 0.43 GB as JPEG (one PNG per image was a
million files of a 4 KiB block each, 4 GB; BENCHMARKS.md, "Issue 19"). ``T`` is the image side up to
:data:`TILE_MAX` (CIFAR 32, digits native), images above are downscaled to it; ``C`` makes an atlas
:data:`ATLAS_PX` pixels wide, small enough to come and decode within the 100 ms a hover may take.
Lossless PNG at zlib level 1 for tiles of native pixels (the map enlarges them with sharp pixels) of up to
:data:`PNG_MAX_ROWS` images, JPEG for downscaled photos and for larger splits: Streamlit stops serving an
app's whole ``static/`` folder when it holds over 1 GB at start-up, and a million PNG tiles alone are 2 GB.

:class:`ThumbnailStore` owns the folder (the app's ``static/thumbs``): one set per split's pixels,
written once, and the whole folder held under a cap (``SIMCLR_THUMBS_MAX_MB``, default 640 MB) by
evicting the sets used least recently. A set's last use is its folder's mtime, which
:meth:`ThumbnailStore.write` and :meth:`ThumbnailStore.touch` set.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from simclr_core.data.datasets import ImageSet
from simclr_core.errors import UserError
from simclr_core.files import remove_stale_temps

__all__ = [
    "MAX_MB_ENV",
    "ThumbSet",
    "ThumbnailStore",
    "atlas_layout",
    "cap_bytes",
    "digest",
    "extension",
    "write_thumbnails",
]

TILE_MAX = 64  # tiles of native pixels up to this side (CIFAR, digits), lossless PNG; larger images shrink to it
ATLAS_PX = 1024  # an atlas's width and most height: 1024 CIFAR tiles, 2.1 MB of PNG (BENCHMARKS.md)
MANIFEST = "atlas.json"
FORMAT = "atlas1"  # in every set's name: a set of another layout (one file per row, before) is not read as one
# Pillow's options per format; PNG level 1 is the fastest and about as small as level 9 here (BENCHMARKS.md)
SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "png": {"compress_level": 1, "optimize": False},
    # full-resolution colour (4:4:4): 4:2:0's smoothed colour bleeds a pixel into the next tile; a CIFAR
    # atlas is then 0.44 MB against PNG's 2.0 MB, 1.2 levels off on average
    "jpg": {"quality": 90, "subsampling": 0},
    "webp": {"lossless": True, "method": 0},
}
WRITERS = 4  # atlases encoded at once; Pillow's encoders release the GIL, so threads use the cores
MAX_MB_ENV = "SIMCLR_THUMBS_MAX_MB"
# six CIFAR-10 train sets (103 MB of atlases each); with the map's columns (simclr_core.explorer.columns,
# 320 MB) under the 1 GB of static/ past which Streamlit serves none of it (checked when the app starts)
DEFAULT_MAX_MB = 640
PNG_MAX_ROWS = 100_000  # lossless PNG atlases up to this many images (CIFAR-10: 103 MB), JPEG above
MB = 2**20  # as `du -m` counts
IN_USE_S = 600.0  # a set written or touched this recently is on someone's map: never evicted
SET_NAME = re.compile(r"^[0-9a-f]{16}$")  # what digest() names; nothing else in the folder is ours to delete


def digest(images: ImageSet) -> str:
    """A name for this split's pixels: its name, shape and a sample of rows (changes when they change)."""
    x = images.images
    sample = x[:: max(1, len(x) // 64)].numpy().tobytes() if len(x) else b""
    h = hashlib.sha1(f"{FORMAT}|{images.name}|{tuple(x.shape)}".encode() + sample)
    return h.hexdigest()[:16]


def extension(images: ImageSet) -> str:
    """The atlases' file extension for this split: lossless "png" for native pixels, "jpg" for downscaled
    images and past :data:`PNG_MAX_ROWS` images (a fifth of the bytes)."""
    native = max(images.images.shape[-2:], default=0) <= TILE_MAX
    return "png" if native and len(images) <= PNG_MAX_ROWS else "jpg"


def atlas_layout(n: int, side: int, atlas_px: int = ATLAS_PX) -> dict[str, int]:
    """{"tile", "cols", "count", "files"} of ``n`` images of ``side`` pixels (the manifest less "ext")."""
    tile = max(1, min(side, TILE_MAX))
    cols = max(1, atlas_px // tile)
    return {"tile": tile, "cols": cols, "count": n, "files": -(-n // (cols * cols))}


def cap_bytes() -> int:
    """The thumbnails' cap in bytes: ``SIMCLR_THUMBS_MAX_MB`` megabytes (2**20 bytes), or 640 MB."""
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


def _atlas(rows: torch.Tensor, tile: int, cols: int) -> np.ndarray:
    """(H, cols*tile, 3) uint8 (or (H, W) for one channel) of up to cols*cols images (k, C, h, w), row-major,
    H as many tile rows as they fill; images of another side than ``tile`` are resized to it first."""
    k, channels = rows.shape[0], rows.shape[1]
    if tuple(rows.shape[-2:]) != (tile, tile):  # one batched resize (antialiased), not one per image
        small = F.interpolate(rows.float(), size=(tile, tile), mode="bilinear", align_corners=False, antialias=True)
        rows = small.round_().clamp_(0, 255).to(torch.uint8)
    lines = -(-k // cols)
    grid = np.zeros((lines * cols, tile, tile, channels), dtype=np.uint8)
    grid[:k] = rows.numpy().transpose(0, 2, 3, 1)
    # (lines, cols, T, T, C) -> (lines, T, cols, T, C): tile j at tile-row j // cols, tile-column j % cols
    out = grid.reshape(lines, cols, tile, tile, channels).transpose(0, 2, 1, 3, 4)
    out = out.reshape(lines * tile, cols * tile, channels)
    return np.ascontiguousarray(out[..., 0] if channels == 1 else out)


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
        """The atlases of ``images`` in ``root/<digest>/`` (the module's layout), written once; returns the folder.

        ``progress`` is called with (images written, total) after each atlas. The files go to a temporary
        folder that is renamed into place when complete, so a reader never finds half a set, and a set
        that exists is not written again (only its use is recorded). After a new set is written, older
        sets are evicted to keep the folder under the cap.
        """
        name = digest(images)
        out = self.root / name
        if self.touch(name):
            if self.manifest(name) is not None:
                return out
            self._remove(out)  # a set without its manifest (emptied by hand): written again
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
        """The atlases and then the manifest of ``images`` into ``folder``, :data:`WRITERS` atlases at a time.

        Each atlas is one array, its tiles pasted by a reshape, encoded whole: memory is an atlas per
        thread (4 MB for CIFAR), and the time is the encoder's (no per-image save).
        """
        x = images.images
        n = len(x)
        layout = atlas_layout(n, int(max(x.shape[-2:], default=1)), ATLAS_PX)
        per = layout["cols"] ** 2

        def one(i: int) -> int:
            rows = x[i * per : (i + 1) * per]
            pic = Image.fromarray(_atlas(rows, layout["tile"], layout["cols"]))
            path = folder / f"atlas-{i}.{ext}"
            pic.save(path, **SAVE_OPTIONS[ext])
            return len(rows)

        done = 0
        with ThreadPoolExecutor(max_workers=max(1, min(WRITERS, os.cpu_count() or 1))) as pool:
            # map submits every atlas up front but each thread slices its rows itself, so the queue holds
            # only numbers; results come back in order, so progress counts whole atlases
            for k in pool.map(one, range(layout["files"])):
                done += k
                if progress:
                    progress(done, n)
        (folder / MANIFEST).write_text(json.dumps({**layout, "ext": ext}))

    def manifest(self, name: str) -> dict[str, Any] | None:
        """The ``atlas.json`` of set ``name`` ({"tile", "cols", "count", "files", "ext"}); None when there is
        no such set or it is not one of atlases (evicted meanwhile, or written before atlases)."""
        if not SET_NAME.match(name):
            return None
        try:
            m = json.loads((self.root / name / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        ok = isinstance(m, dict) and all(type(m.get(k)) is int for k in ("tile", "cols", "count", "files"))
        return m if ok and m.get("ext") in ("png", "jpg", "webp") else None

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
            if not self._remove(s.path):  # another process evicted it first
                continue
            over -= s.bytes
            removed.append(s.name)
        return removed

    def _remove(self, path: Path) -> bool:
        """Delete a set; False if it was gone already."""
        # renamed first, so a browser asking meanwhile gets a missing file, never half a set; the
        # temp name carries our pid, so a kill mid-delete leaves what remove_stale_temps clears
        gone = self.root / f".{path.name}.evicted.{os.getpid()}.tmp"
        try:
            os.rename(path, gone)
        except OSError:
            return False
        shutil.rmtree(gone, ignore_errors=True)
        return True

    def remove_stale_temps(self) -> int:
        """Delete the temp folders of writers (and evictions) whose process has died; returns how many."""
        return remove_stale_temps(self.root)


def write_thumbnails(images: ImageSet, root: str | Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """:meth:`ThumbnailStore.write` into ``root`` under the cap of ``SIMCLR_THUMBS_MAX_MB``."""
    return ThumbnailStore(root).write(images, progress)
