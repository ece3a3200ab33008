"""The decoded-image cache: each split once as uint8 arrays on disk, memory-mapped by later loads.

Every split is decoded once into ``data_dir/cache/`` as a ``.npy`` file (uint8, NCHW) plus
labels and a small JSON sidecar; later loads memory-map it, so a 60k-image folder opens in
well under a second and training never touches JPEG decoding again. When the cache cannot be
written (full disk, read-only folder), the images are kept in memory instead, with a note that
says why.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from simclr_core.data.imageset import ImageSet
from simclr_core.errors import UserError
from simclr_core.files import remove_stale_temps
from simclr_core.hardware import available_memory as _available_memory

_CACHE_VERSION = 3  # bump when the cache layout or decoding changes (3: 16-bit images, skip reasons)
_DISK_HEADROOM = 64 * 2**20  # left free on the disk beside the cache, for checkpoints and logs
_NPY_HEADER = 128  # fixed .npy header length, so the final image count can be written over the first guess


def cache_stem(data_dir: Path, label: str, key: dict) -> Path:
    """Where a split's cache files go, without their suffixes: named after ``label``, keyed by ``key``."""
    digest = hashlib.sha256(json.dumps({"v": _CACHE_VERSION, **key}, sort_keys=True).encode()).hexdigest()
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)  # no dots: suffixes stay ours
    return data_dir / "cache" / f"{safe}-{digest[:16]}"


def _file(stem: Path, ext: str) -> Path:
    return stem.with_name(stem.name + ext)


def _discard(path: Path) -> None:
    """Remove a leftover temp file; cleanup must not mask the error that got us here."""
    with contextlib.suppress(OSError):
        path.unlink()


def _image_set(images: torch.Tensor, labels: np.ndarray, meta: dict, name: str) -> ImageSet:
    """An ImageSet from the images and the cache's sidecar fields (classes, skips, files)."""
    files = meta.get("files")  # folders only: paths relative to the split folder, in row order
    paths = [os.path.join(name.removeprefix("folder:"), f) for f in files] if files is not None else None
    return ImageSet(
        images,
        torch.from_numpy(labels.astype(np.int64)),
        list(meta["classes"]),
        name,
        int(meta["skipped"]),
        paths,
        dict(meta["skips"]),
        [],
        dict(meta["examples"]),
    )


def read_cache(stem: Path, name: str) -> ImageSet | None:
    """The cached split, or None when absent or unreadable (it is then rebuilt)."""
    try:
        meta = json.loads(_file(stem, ".json").read_text())  # written last: marks a complete cache
        meta = {"classes": [str(c) for c in meta["classes"]], "skipped": int(meta["skipped"]),
                "count": int(meta["count"]), "files": meta.get("files"),
                "skips": {str(k): int(v) for k, v in meta["skips"].items()},
                "examples": {str(k): str(v) for k, v in meta["examples"].items()}}  # fmt: skip
        # Copy-on-write map: writable for torch, yet in-place edits never reach the file.
        images = np.load(_file(stem, ".npy"), mmap_mode="c")
        labels = np.load(_file(stem, ".labels.npy"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if images.ndim != 4 or images.dtype != np.uint8 or not len(images) == len(labels) == meta["count"]:
        return None
    files = meta["files"]
    if files is not None and (not isinstance(files, list) or len(files) != meta["count"]):
        return None
    return _image_set(torch.from_numpy(images), labels, meta, name)


_LEGACY_TEMP = re.compile(r"^[\w-]+\.[0-9a-f]{12}\.tmp(\.packed)?\.npy(\.json)?$")  # cache version 2's, no pid


def _remove_stale_temps(cache_dir: Path) -> None:
    """Delete the temp files of dead processes (a decode killed by kill -9 leaves one per split)."""
    remove_stale_temps(cache_dir)
    # version 2's names hold no pid: an hour without a write means its writer is gone
    with contextlib.suppress(OSError):
        for e in os.scandir(cache_dir):
            if _LEGACY_TEMP.match(e.name) and e.stat().st_mtime < time.time() - 3600:
                os.unlink(e.path)


def _mount_of(path: Path) -> Path:
    """The mount point holding ``path``: the disk on which a user must free space."""
    path = Path(os.path.abspath(path))
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def mb(n: int) -> int:
    """``n`` bytes in whole megabytes, rounded up (at least 1)."""
    return max(1, -(-n // 2**20))


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy (version 1.0) header for C-order uint8 data of ``shape``, always _NPY_HEADER bytes long."""
    text = repr({"descr": "|u1", "fortran_order": False, "shape": tuple(int(n) for n in shape)})
    return (np.lib.format.magic(1, 0) + struct.pack("<H", _NPY_HEADER - 10)
            + text.ljust(_NPY_HEADER - 11).encode("latin1") + b"\n")  # fmt: skip


def _write_all(fd: int, data: memoryview) -> None:
    """Write ``data`` at the file's offset, with plain writes: a full disk is then an OSError (ENOSPC)
    here, where writing through a memory map of a sparse file would kill the process with SIGBUS."""
    while data:
        data = data[os.write(fd, data) :]


class Rows:
    """Where a split's images go, in order: the cache's temp .npy file, or memory when it cannot be written.

    Once the image size is known the disk's free space is checked and the file preallocated, then
    filled with plain writes. On any OSError (full disk, read-only or bogus folder) the rows written
    so far are read back, the file is removed and the rest stays in memory; ``note`` then says why,
    and how to get the cache back. Memory too small to hold them is a UserError naming the fix.
    """

    def __init__(self, path: Path, total: int):
        self.path, self.total = path, total
        self.shape: tuple[int, ...] | None = None  # of one image, known at the first chunk
        self.count = 0
        self.chunks: list[np.ndarray] = []  # the images, while in memory
        self.memory, self.checked, self.why, self.note, self.fix = False, False, "", "", ""
        self.fd: int | None = None
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as err:
            self.to_memory(err)

    @property
    def open_fd(self) -> int:
        """The file's descriptor, while it is open (not given up for memory, not finished)."""
        if self.fd is None:
            raise RuntimeError(f"the image cache file {self.path} is not open")
        return self.fd

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape)) if self.shape is not None else 0

    def append(self, images: np.ndarray) -> None:
        """Add (k, 3, H, W) uint8 images after those already there."""
        if self.shape is None:
            self.shape = tuple(images.shape[1:])
            if not self.memory:
                try:
                    self._reserve()
                except OSError as err:
                    self.to_memory(err)
        if not self.memory:
            try:
                _write_all(self.open_fd, np.ascontiguousarray(images).reshape(-1).data)
            except OSError as err:
                self.to_memory(err)
        if self.memory:
            if not self.checked:  # once: what is still to come must fit beside what memory holds
                self.checked = True
                self._check_memory((self.total - self.count - len(images)) * self.row_bytes)
            self.chunks.append(images)
        self.count += len(images)

    def _reserve(self) -> None:
        """Check that the disk has room for every image, and headroom, then preallocate the file."""
        assert self.shape is not None, "reserved at the first chunk, once its shape is known"
        size = _NPY_HEADER + self.total * self.row_bytes
        free = shutil.disk_usage(self.path.parent).free
        if free < size + _DISK_HEADROOM:
            raise OSError(
                errno.ENOSPC,
                f"{mb(size)} MB needed and {mb(_DISK_HEADROOM)} MB kept free for checkpoints, {mb(free)} MB free",
            )
        try:  # blocks allocated now: a disk filled meanwhile by others cannot fail the writes
            os.posix_fallocate(self.open_fd, 0, size)
        except AttributeError:  # no posix_fallocate (macOS): plain writes still fail cleanly
            pass
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):  # unsupported here: go on
                raise
        _write_all(self.open_fd, memoryview(_npy_header((self.total, *self.shape))))

    def _check_memory(self, need: int) -> None:
        avail = _available_memory()
        if need > 0 and avail is not None and need > avail // 2:
            raise UserError(
                f"cannot cache the decoded images in {self.path.parent} ({self.why}), and the "
                f"{mb(need)} MB they still need do not fit in memory ({mb(avail)} MB free): "
                f"{self.fix}"
            )

    def to_memory(self, err: OSError) -> None:
        """Give up the file after ``err``: keep the images in memory from now on, and say why."""
        where = self.path.parent
        self.why = err.strerror or str(err)
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            need = _NPY_HEADER + self.total * self.row_bytes + _DISK_HEADROOM
            free = 0
            with contextlib.suppress(OSError):
                free = shutil.disk_usage(where).free
            self.fix = f"free {mb(need - free)} MB on {_mount_of(where)} or pass a --data-dir on a disk with room"
        else:
            self.fix = "make that folder writable or pass a writable --data-dir"
        self.note = (
            f"not caching the decoded images in {where} ({self.why}): they are held in memory and "
            f"decoded again next time; to cache them, {self.fix}"
        )
        if self.memory:
            return
        self.memory = True
        try:
            if self.count and self.fd is None:  # the finished file: read back all of it
                self.chunks = [np.load(self.path)]
            elif self.count and self.shape is not None:  # the rows written so far (a count implies a shape);
                # the chunk that failed is still the caller's
                data = np.fromfile(self.path, dtype=np.uint8, count=self.count * self.row_bytes, offset=_NPY_HEADER)
                self.chunks = [data.reshape(self.count, *self.shape)]
        finally:
            self.close()
            _discard(self.path)

    def reset(self) -> None:
        """Drop every image, to start again (at another size)."""
        self.shape, self.count, self.chunks, self.checked = None, 0, [], False
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
                os.lseek(self.fd, 0, os.SEEK_SET)
            except OSError as err:
                self.to_memory(err)

    def finish(self) -> None:
        """Complete the file: a header with the final count, and no preallocated tail. Raises OSError."""
        shape = self.shape or (3, 0, 0)
        os.pwrite(self.open_fd, _npy_header((self.count, *shape)), 0)  # same length as the first guess
        os.ftruncate(self.open_fd, _NPY_HEADER + self.count * int(np.prod(shape)))
        self.close()

    def images(self) -> np.ndarray:
        """The images held in memory, as one (N, 3, H, W) array."""
        if not self.chunks:
            return np.empty((0, *(self.shape or (3, 0, 0))), dtype=np.uint8)
        return np.ascontiguousarray(self.chunks[0]) if len(self.chunks) == 1 else np.concatenate(self.chunks)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While a cache is built, SIGTERM raises KeyboardInterrupt, so the ``finally`` blocks remove temp files.

    By default SIGTERM ends the process at once, leaving a temp file as big as the split and no
    status. Only in the main thread (signals cannot be handled elsewhere), and only over the
    default action: a handler that someone installed (the training loop's) is left alone.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("stopped by SIGTERM while decoding images")

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


Fill = Callable[[Rows], tuple[np.ndarray, list[str], dict[str, int], dict[str, str], list[str] | None]]


def build_cache(stem: Path, name: str, total: int, fill: Fill) -> ImageSet:
    """Create the cache: ``fill(rows)`` appends the ``total`` images (or fewer) to ``rows`` and returns
    (labels, classes, skips by reason, an example file for each reason, files).

    ``files`` (folders only) names each kept image's file relative to the split folder.

    Each file appears atomically via os.replace, the JSON sidecar last, so an interrupted build is
    never mistaken for a finished one. Temp files are named ``.<name>.<pid>.tmp.<ext>`` and removed on
    every way out (errors, Ctrl-C, SIGTERM); those of dead processes go at the next build. When the
    cache cannot be written, the split comes back from memory with a note that says why, in
    ``notes``, for the caller to log.
    """
    cache_dir = stem.parent
    with contextlib.suppress(OSError):  # an unusable folder means "no cache": Rows says why
        cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(cache_dir)
    base, pid = f".{stem.name}-{uuid.uuid4().hex[:8]}", os.getpid()  # unique: threads of a process may race
    temps = [cache_dir / f"{base}{part}.{pid}.tmp{ext}" for part, ext in
             (("", ".npy"), ("-labels", ".npy"), ("", ".json"))]  # fmt: skip
    with _sigterm_raises():
        rows = Rows(temps[0], total)
        try:
            labels, classes, skips, examples, files = fill(rows)
            meta = {"count": len(labels), "classes": list(classes), "skipped": sum(skips.values()),
                    "skips": skips, "examples": examples}  # fmt: skip
            if files is not None:
                meta["files"] = files
            if not rows.memory:
                try:
                    rows.finish()
                    np.save(temps[1], labels.astype(np.int64))
                    temps[2].write_text(json.dumps(meta))
                    os.replace(temps[0], _file(stem, ".npy"))
                    rows.path = _file(stem, ".npy")  # where to read the images back if the rest fails
                    os.replace(temps[1], _file(stem, ".labels.npy"))
                    os.replace(temps[2], _file(stem, ".json"))
                except OSError as err:
                    rows.to_memory(err)
            if rows.memory:
                held = _image_set(torch.from_numpy(rows.images()), labels, meta, name)
                return replace(held, notes=[rows.note])
        except OSError as err:  # e.g. the rows written could not be read back
            raise UserError(
                f"could not write the image cache in {cache_dir} ({err.strerror or err}); "
                f"{rows.fix or 'free some disk space or pass a writable --data-dir'}"
            ) from err
        finally:
            rows.close()
            for tmp in temps:
                _discard(tmp)
    cached = read_cache(stem, name)
    if cached is None:
        raise RuntimeError(f"cache {stem} unreadable right after writing it")
    return cached
