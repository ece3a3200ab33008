"""Datasets as uint8 tensors: bundled digits, CIFAR-10, STL-10 and any folder of images.

Every split is decoded once into ``data_dir/cache/`` as a ``.npy`` file (uint8, NCHW) plus
labels and a small JSON sidecar; later loads memory-map it, so a 60k-image folder opens in
well under a second and training never touches JPEG decoding again.

A folder is read defensively, since it is the user's: broken links, symlink loops, unreadable
sub-folders, corrupt files and images over :data:`MAX_PIXELS` are skipped and counted
(``ImageSet.skips``, one line in ``ImageSet.notes`` and the log), never fatal. When the cache
cannot be written (full disk, read-only folder), the images are kept in memory instead.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import stat
import struct
import tarfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import URLError

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from simclr_core.errors import UserError
from simclr_core.files import remove_stale_temps
from simclr_core.hardware import available_memory as _available_memory

if TYPE_CHECKING:
    from simclr_core.config import DataConfig

__all__ = [
    "DATASETS",
    "ImageSet",
    "default_splits",
    "held_out",
    "holdout",
    "load_split",
    "pretrain_split",
    "split_of",
    "splits_of",
]

DATASETS: tuple[str, ...] = ("digits", "cifar10", "stl10", "folder")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FOLDER_SPLITS: tuple[str, ...] = ("train", "val", "test")
_FIXED_SPLITS = {
    "digits": ["train", "test", "all"],
    "cifar10": ["train", "test"],
    "stl10": ["train", "test", "unlabeled", "train+unlabeled"],
}
# Images with more pixels than this are skipped (counted as "too_large"): decoding one costs about
# 7 bytes a pixel (the file's mode, then RGB), so 64 MP is ~450 MB per worker process. JPEGs are
# first decoded at reduced scale (Image.draft) to the size the cache needs, and checked after that,
# so a 12000x12000 photo still loads; a PNG, TIFF, ... of that size cannot be reduced while decoding.
MAX_PIXELS = 64_000_000
_CACHE_VERSION = 3  # bump when the cache layout or decoding changes (3: 16-bit images, skip reasons)
_DIGITS_SIZE = 32
_FOLDER_SIZE = 96  # used when a folder's images differ in size or are large
_MAX_NATIVE = 256  # larger square images are still resized to keep the cache small
_EXIF_ORIENTATION = 0x0112
_DISK_HEADROOM = 64 * 2**20  # left free on the disk beside the cache, for checkpoints and logs
_NPY_HEADER = 128  # fixed .npy header length, so the final image count can be written over the first guess
_SKIP_LABELS = {  # reason -> (one, many), in the order a summary lists them
    "broken_link": ("broken link", "broken links"),
    "symlink_loop": ("symlink loop", "symlink loops"),
    "unreadable_folder": ("unreadable folder", "unreadable folders"),
    "unreadable_file": ("unreadable file", "unreadable files"),
    "special_file": ("special file (not a regular file)", "special files (not regular files)"),
    "unreadable_image": ("unreadable image", "unreadable images"),
    "too_large": (
        "image over {mp} megapixels (downscale it to use it)",
        "images over {mp} megapixels (downscale them to use them)",
    ),
}
_log = logging.getLogger(__name__)
_told: set[str] = set()  # notes already logged by this process: a split is often loaded several times


@dataclass
class ImageSet:
    """A labelled (or unlabelled) split held as one uint8 tensor.

    ``images`` may wrap a copy-on-write memory map of the cache file: reading is free and
    in-place writes stay private to the process, never reaching the file.
    """

    images: torch.Tensor  # (N, 3, H, W) uint8, CPU, contiguous
    labels: torch.Tensor  # (N,) int64; -1 where the image has no label
    classes: list[str]  # class names; [] when unlabelled
    name: str  # e.g. "cifar10/train", "folder:/abs/path/train"
    skipped: int = 0  # folder entries skipped while scanning or decoding: the sum of ``skips``
    paths: list[str] | None = None  # folders: each image's file, absolute, so a user can find it on disk
    skips: dict[str, int] = field(default_factory=dict)  # skipped entries by reason, e.g. {"broken_link": 2}
    notes: list[str] = field(default_factory=list)  # one-line messages for the user: what was skipped, no cache
    skip_examples: dict[str, str] = field(default_factory=dict)  # reason -> first such entry, relative to the split

    @property
    def labelled(self) -> bool:
        """True when every image has a label and the class names are known."""
        return bool(self.classes) and len(self.labels) > 0 and bool((self.labels >= 0).all())

    def take(self, indices: torch.Tensor) -> ImageSet:
        """The images at ``indices`` (sorted int64), with their labels and paths."""
        paths = [self.paths[i] for i in indices.tolist()] if self.paths is not None else None
        return replace(self, images=self.images[indices].contiguous(), labels=self.labels[indices], paths=paths)

    def subset(self, n: int | None, seed: int = 0) -> ImageSet:
        """A fixed random subset of ``n`` images (all of them when n is None or not smaller)."""
        if n is None or n >= len(self):
            return self
        return self.take(torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _folder_root(path: str | None) -> Path:
    """The folder a user named, validated."""
    if path is None:
        raise UserError("--dataset folder needs --data-path DIR (a folder of images or of class sub-folders)")
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"--data-path {path} does not exist; point it at a folder of images")
    if not root.is_dir():
        raise UserError(f"--data-path {path} is a file, not a folder; extract archives first and point at the folder")
    return root.resolve()


def splits_of(dataset: str, path: str | None = None) -> list[str]:
    """Names of the splits a dataset offers (folder: sub-folders train/val/test that exist, else ["all"])."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if dataset != "folder":
        return list(_FIXED_SPLITS[dataset])
    root = _folder_root(path)
    return [s for s in FOLDER_SPLITS if (root / s).is_dir()] or ["all"]


def _split_dir(root: Path, split: str) -> Path:
    return root if split == "all" else root / split


def _has_class_dirs(folder: Path) -> bool:
    return any(_is_dir(e) for e in _entries(folder))


def _entries(folder: Path) -> list[os.DirEntry]:
    """The non-hidden entries of a split folder, by name; a folder the user cannot read is a UserError."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as err:
        raise UserError(
            f"cannot read the image folder {folder} ({err.strerror or err}); "
            "fix its permissions or point --data-path at another folder"
        ) from err


def _is_dir(entry: os.DirEntry) -> bool:
    """True for a folder or a link to one; False for a broken link or a symlink loop (which raise)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def default_splits(dataset: str, path: str | None = None) -> tuple[str, str | None, str | None]:
    """(pretrain split, kNN memory-bank split, kNN query split); None where there is no labelled one.

    A folder with a single split gets ``("all", "all", None)``: evaluation then carves a query
    set out of it with :func:`holdout`. A folder without class sub-folders has no labels, so
    both kNN splits are None.
    """
    splits = splits_of(dataset, path)
    if dataset == "stl10":
        return "train+unlabeled", "train", "test"
    if dataset != "folder":
        return "train", "train", "test"
    root = _folder_root(path)
    pretrain = "train" if "train" in splits else splits[0]
    query = next((s for s in ("test", "val") if s in splits and s != pretrain), None)
    if not _has_class_dirs(_split_dir(root, pretrain)):
        return pretrain, None, None
    if query is not None and not _has_class_dirs(_split_dir(root, query)):
        query = None
    return pretrain, pretrain, query


def holdout(n: int, fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (bank_indices, query_indices) partition of range(n), both sorted int64.

    For datasets with a single labelled split; the query part holds ``round(n * fraction)``
    images, at least one, and never all of them.
    """
    if not 0.0 < fraction < 1.0:
        raise UserError(f"the held-out fraction must be between 0 and 1 (exclusive), got {fraction}")
    if n < 2:
        raise UserError(f"need at least 2 images to hold out a query set, got {n}; use a bigger folder")
    n_query = min(n - 1, max(1, round(n * fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_query:].sort().values, perm[:n_query].sort().values


def load_split(
    dataset: str,
    split: str,
    *,
    path: str | None = None,
    data_dir: str = "data",
    image_size: int | None = None,
    download: bool = True,
    subset: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> ImageSet:
    """Load one split as an ImageSet, decoding once into an on-disk uint8 cache under data_dir/cache/.

    Args:
        dataset: One of :data:`DATASETS`.
        split: One of ``splits_of(dataset, path)``.
        path: The image folder, for ``dataset="folder"`` only.
        data_dir: Where torchvision datasets live and the ``cache/`` folder is written.
        image_size: Square side to resize to; None keeps the dataset's own size
            (digits: 32; folders: their size if all images share one square size <= 256, else 96).
        download: Let torchvision fetch CIFAR-10 / STL-10 when absent.
        subset: Keep a deterministic random subset of this many images.
        seed: Seed for ``subset``.
        progress: Called as ``progress(done, total)`` while a folder is decoded.
    """
    offered = splits_of(dataset, path)
    if split not in offered:
        raise UserError(f"{dataset} has no split {split!r}; choose one of: {', '.join(offered)}")
    if image_size is not None and image_size < 1:
        raise UserError(f"image size must be a positive number of pixels, got {image_size}")
    if subset is not None and subset < 1:
        raise UserError(f"subset must be a positive number of images, got {subset}")
    if dataset == "digits":
        images = _load_digits(split, image_size or _DIGITS_SIZE)
    elif dataset == "folder":
        images = _load_folder(_folder_root(path), split, Path(data_dir), image_size, progress)
    else:
        images = _load_torchvision(dataset, split, Path(data_dir), image_size, download)
    return images.subset(subset, seed)


def split_of(
    cfg: DataConfig,
    split: str,
    *,
    subset: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> ImageSet:
    """:func:`load_split` with a run's data settings (dataset, folder, data dir, image size, download)."""
    return load_split(
        cfg.dataset,
        split,
        path=cfg.data_path,
        data_dir=cfg.data_dir,
        image_size=cfg.image_size,
        download=cfg.download,
        subset=subset,
        seed=seed,
        progress=progress,
    )


def held_out(
    cfg: DataConfig, split: str, progress: Callable[[int, int], None] | None = None
) -> tuple[ImageSet, ImageSet]:
    """(rest, held-out fifth) of a dataset's only labelled split, by :func:`holdout` over the whole split.

    The fifth is the query set of kNN and the linear probe; pre-training leaves it out unless
    ``cfg.transductive``, so those figures measure images the encoder has not seen.
    """
    images = split_of(cfg, split, progress=progress)
    rest, fifth = holdout(len(images))
    return images.take(rest), images.take(fifth)


def leaves_out_fifth(cfg: DataConfig, split: str) -> bool:
    """True when pre-training on ``split`` leaves out its held-out fifth: the dataset's only labelled
    split, whose fifth are the kNN and linear-probe queries (unless ``cfg.transductive``)."""
    _, bank, query = default_splits(cfg.dataset, cfg.data_path)
    return query is None and bank == split and not cfg.transductive


def pretrain_split(
    cfg: DataConfig,
    split: str,
    *,
    subset: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> ImageSet:
    """The images a run pre-trains on: ``split``, less the held-out fifth when that fifth is the
    evaluation's query set (a single labelled split, and not ``cfg.transductive``)."""
    if leaves_out_fifth(cfg, split):
        rest, fifth = held_out(cfg, split, progress)
        note = (
            f"pre-training leaves out the {len(fifth)} images held out as kNN and linear-probe queries "
            "(--transductive to include them)"
        )
        return replace(rest.subset(subset, seed), notes=[*rest.notes, note])
    return split_of(cfg, split, subset=subset, seed=seed, progress=progress)


_RESIZE_CHUNK = 256 * 2**20  # bytes of float32 a resize batch may take


def _resize(images: torch.Tensor, size: int, batch: int = 1024) -> torch.Tensor:
    """Bilinear, antialiased resize of uint8 NCHW images, in batches to bound memory.

    The result stays in memory (as the run's images): when it would take more than half the free
    memory, a UserError names an ``--image-size`` that fits, before anything is allocated.
    """
    if images.shape[-2:] == (size, size):
        return images
    n, c = len(images), images.shape[1]
    need, avail = n * c * size * size, _available_memory()
    if avail is not None and need > avail // 2:
        fits = max(8, int((avail // 2 / max(n * c, 1)) ** 0.5) // 8 * 8)
        raise UserError(
            f"--image-size {size} makes the {n} images take {_mb(need):,} MB of memory, and "
            f"{_mb(avail):,} MB are free; use --image-size {fits} or less"
        )
    batch = max(1, min(batch, _RESIZE_CHUNK // (c * size * size * 4)))  # large sides: fewer images at a time
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + batch] = chunk.round().clamp(0, 255).to(torch.uint8)
    return out


def _load_digits(split: str, size: int) -> ImageSet:
    """scikit-learn's bundled 8x8 digits; instant, so never cached."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    y = digits.target.astype(np.int64)
    idx = np.arange(len(y))
    if split != "all":
        train, test = train_test_split(idx, test_size=0.2, random_state=0, stratify=y)
        idx = np.sort(train if split == "train" else test)
    grey = torch.from_numpy(np.round(digits.images[idx] * (255.0 / 16.0)).astype(np.uint8))
    images = _resize(grey.unsqueeze(1).repeat(1, 3, 1, 1), size).contiguous()
    return ImageSet(images, torch.from_numpy(y[idx]), [str(c) for c in range(10)], f"digits/{split}")


# ---------------------------------------------------------------- cache


def _cache_stem(data_dir: Path, label: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps({"v": _CACHE_VERSION, **key}, sort_keys=True).encode()).hexdigest()
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)  # no dots: suffixes stay ours
    return data_dir / "cache" / f"{safe}-{digest[:16]}"


def _file(stem: Path, ext: str) -> Path:
    return stem.with_name(stem.name + ext)


def _discard(path: Path) -> None:
    """Remove a leftover temp file; cleanup must not mask the error that got us here."""
    with contextlib.suppress(OSError):
        path.unlink()


def _tell(note: str) -> None:
    """Log a note for the user once per process (a split is often loaded several times per run)."""
    if note and note not in _told:
        _told.add(note)
        _log.warning(note)


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


def _read_cache(stem: Path, name: str) -> ImageSet | None:
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


def _mb(n: int) -> int:
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


class _Rows:
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
                f"{_mb(size)} MB needed and {_mb(_DISK_HEADROOM)} MB kept free for checkpoints, {_mb(free)} MB free",
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
                f"{_mb(need)} MB they still need do not fit in memory ({_mb(avail)} MB free): "
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
            self.fix = f"free {_mb(need - free)} MB on {_mount_of(where)} or pass a --data-dir on a disk with room"
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


Fill = Callable[[_Rows], tuple[np.ndarray, list[str], dict[str, int], dict[str, str], list[str] | None]]


def _build_cache(stem: Path, name: str, total: int, fill: Fill) -> ImageSet:
    """Create the cache: ``fill(rows)`` appends the ``total`` images (or fewer) to ``rows`` and returns
    (labels, classes, skips by reason, an example file for each reason, files).

    ``files`` (folders only) names each kept image's file relative to the split folder.

    Each file appears atomically via os.replace, the JSON sidecar last, so an interrupted build is
    never mistaken for a finished one. Temp files are named ``.<name>.<pid>.tmp.<ext>`` and removed on
    every way out (errors, Ctrl-C, SIGTERM); those of dead processes go at the next build. When the
    cache cannot be written, the split comes back from memory with a note that says why.
    """
    cache_dir = stem.parent
    with contextlib.suppress(OSError):  # an unusable folder means "no cache": _Rows says why
        cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(cache_dir)
    base, pid = f".{stem.name}-{uuid.uuid4().hex[:8]}", os.getpid()  # unique: threads of a process may race
    temps = [cache_dir / f"{base}{part}.{pid}.tmp{ext}" for part, ext in
             (("", ".npy"), ("-labels", ".npy"), ("", ".json"))]  # fmt: skip
    with _sigterm_raises():
        rows = _Rows(temps[0], total)
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
                _tell(rows.note)
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
    cached = _read_cache(stem, name)
    if cached is None:
        raise RuntimeError(f"cache {stem} unreadable right after writing it")
    return cached


# ---------------------------------------------------------------- torchvision


def _load_torchvision(dataset: str, split: str, data_dir: Path, size: int | None, download: bool) -> ImageSet:
    name = f"{dataset}/{split}"
    stem = _cache_stem(data_dir, name, {"dataset": dataset, "split": split,
                                        "root": str(data_dir.resolve()), "size": size})  # fmt: skip
    cached = _read_cache(stem, name)
    if cached is not None:
        return cached
    import torchvision.datasets  # slow to import; only needed on the first load

    try:
        if dataset == "cifar10":
            ds = torchvision.datasets.CIFAR10(root=str(data_dir), train=split == "train", download=download)
            data, labels = np.asarray(ds.data).transpose(0, 3, 1, 2), np.asarray(ds.targets)
        else:
            ds = torchvision.datasets.STL10(root=str(data_dir), split=split, download=download)
            data, labels = np.asarray(ds.data), np.asarray(ds.labels)
    except (URLError, OSError, RuntimeError, tarfile.TarError) as err:
        detail = (str(err) or type(err).__name__).splitlines()[0]
        why, fix = (f"could not be downloaded (offline?) [{detail}]", "connect once") if download else (
            "downloading is off", "allow downloading once while online")  # fmt: skip
        raise UserError(
            f"{'CIFAR-10' if dataset == 'cifar10' else 'STL-10'} is not in {data_dir}/ and {why}: {fix}, "
            "or use --dataset folder "
            "--data-path DIR (an image folder, e.g. CIFAR-10 as JPEGs), or --dataset digits (bundled, offline)"
        ) from err
    labels = labels.astype(np.int64)
    classes = list(getattr(ds, "classes", [])) if (labels >= 0).any() else []
    data = np.ascontiguousarray(data)
    if size is not None:
        data = _resize(torch.from_numpy(data), size).numpy()

    def fill(rows: _Rows) -> tuple[np.ndarray, list[str], dict[str, int], dict[str, str], None]:
        rows.append(data)
        return labels, classes, {}, {}, None

    return _build_cache(stem, name, len(data), fill)


# ---------------------------------------------------------------- image folders


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


class _Skipped:
    """Entries skipped while scanning or decoding a folder: a count and a first example per reason."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def add(self, reason: str, rel: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, rel)


def _skip_reason(entry: os.DirEntry, err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "symlink_loop"
    with contextlib.suppress(OSError):
        if entry.is_symlink() and err.errno in (errno.ENOENT, errno.ENOTDIR):
            return "broken_link"
    return "unreadable_file"


def _skip_parts(counts: dict[str, int], examples: dict[str, str]) -> str:
    """E.g. "2 broken links, e.g. cats/a.jpg; 1 unreadable folder, e.g. dogs/private"."""
    parts = []
    for reason, (one, many) in _SKIP_LABELS.items():
        n = counts.get(reason, 0)
        if n:
            label = (one if n == 1 else many).format(mp=MAX_PIXELS // 10**6)
            parts.append(f"{n} {label}" + (f", e.g. {printable(examples[reason])}" if reason in examples else ""))
    return "; ".join(parts)


def printable(name: str) -> str:
    """``name`` with the bytes of a file name that is not UTF-8 (Python's surrogate escapes) written ``\\xff``:
    such names open as they are, but cannot be printed, logged or shown until they are made text."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _skip_summary(folder: Path, counts: dict[str, int], examples: dict[str, str]) -> str:
    """One line: "skipped 3 unreadable entries in DIR (2 broken links, e.g. ...; 1 unreadable folder, ...)"."""
    n = sum(counts.values())
    where = printable(str(folder))
    return f"skipped {n} unreadable {'entry' if n == 1 else 'entries'} in {where} ({_skip_parts(counts, examples)})"


def _walk(folder: str, prefix: str, skipped: _Skipped) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of image files anywhere below ``folder``; hidden entries skipped.

    Links to folders are not followed, so a loop cannot recurse. A broken or looping link, a
    folder that cannot be read and a non-regular file with an image name (a FIFO would block the
    decoder) are counted in ``skipped``, never fatal.

    Plain scandir with string paths: pathlib and os.path.relpath cost seconds on 60k files,
    and this scan runs on every load, cached or not.
    """
    found = []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name.startswith("."):
                    continue
                rel = prefix + e.name
                try:
                    if e.is_dir(follow_symlinks=False):
                        found += _walk(e.path, rel + "/", skipped)
                    elif _is_image(e.name):
                        st = e.stat()  # follows links: raises for a broken one or a loop
                        if stat.S_ISREG(st.st_mode):
                            found.append((rel, st.st_size, st.st_mtime_ns))
                        else:
                            skipped.add("special_file", rel)
                except OSError as err:
                    skipped.add(_skip_reason(e, err), rel)
    except OSError:  # unreadable (chmod 000), or gone meanwhile
        skipped.add("unreadable_folder", prefix.rstrip("/"))
    return found


def _scan(folder: Path) -> tuple[list[tuple[str, int, int]], list[int], list[str], _Skipped]:
    """(files as (relative path, size, mtime), labels, classes, what was skipped) of one split.

    Each sub-folder holding images is a class (a link to a folder counts); images directly in
    ``folder`` get label -1. A broken or looping link at this level counts as skipped whatever its
    name, as it may stand for a class folder.
    """
    skipped = _Skipped()
    files: list[tuple[str, int, int]] = []
    class_dirs = []
    for e in _entries(folder):
        try:
            if e.is_dir():  # follows links; raises for a loop
                class_dirs.append(e)
            elif _is_image(e.name) or e.is_symlink():
                st = e.stat()  # raises for a broken link
                if not _is_image(e.name):
                    continue
                if stat.S_ISREG(st.st_mode):
                    files.append((e.name, st.st_size, st.st_mtime_ns))
                else:
                    skipped.add("special_file", e.name)
        except OSError as err:
            skipped.add(_skip_reason(e, err), e.name)
    labels = [-1] * len(files)
    classes: list[str] = []
    for entry in class_dirs:
        inside = sorted(_walk(entry.path, entry.name + "/", skipped))
        if inside:  # a folder without images is no class
            files += inside
            labels += [len(classes)] * len(inside)
            classes.append(entry.name)
    return files, labels, classes, skipped


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit greyscale (PNG, TIFF: mode I;16*, or I) scaled to 8 bits; Pillow's convert would clip it at 255.

    Mode I holding values <= 255 is 8-bit data in a wide container and is kept as it is.
    """
    if not (im.mode.startswith("I;16") or im.mode == "I"):
        return im
    a = np.asarray(im)
    if im.mode == "I" and a.max(initial=0) <= 255:
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    return Image.fromarray((np.clip(a, 0, 65535) >> 8).astype(np.uint8), "L")  # 65535 -> 255, 32768 -> 128


def _decode_one(path: str, size: int | None, max_pixels: int = MAX_PIXELS) -> np.ndarray | str:
    """(H, W, 3) uint8 RGB image, or why it was skipped: "unreadable_image" or "too_large".

    With ``size`` the shorter side is resized to it and the centre cropped square. An image with
    more than ``max_pixels`` pixels (JPEG: after reduced-scale decoding) is not decoded.
    """
    im: Image.Image  # the opened file, then the images made from it
    try:
        with Image.open(path) as im:
            # JPEG: decode at 1/2..1/8 scale, never below the size needed (without ``size``, just above the
            # largest native size kept): a 12000x12000 photo then takes ~30 MB, not 2.5 GB. Others ignore it.
            im.draft("RGB", (size, size) if size is not None else (_MAX_NATIVE + 1, _MAX_NATIVE + 1))
            if im.width * im.height > max_pixels:
                return "too_large"
            if im.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # phone photos stored rotated
                im = ImageOps.exif_transpose(im)
            im = _to_8bit(im).convert("RGB")
        if size is not None and im.size != (size, size):
            im = ImageOps.fit(im, (size, size), Image.Resampling.BICUBIC)
        return np.asarray(im)
    except Image.DecompressionBombError:  # over Pillow's own bound (outside our pool workers)
        return "too_large"
    except Exception:  # noqa: BLE001 - user files: corrupt, truncated or exotic images are skipped, never fatal
        return "unreadable_image"


def _worker_init() -> None:
    """Pool workers: the parent alone handles Ctrl-C and SIGTERM (it stops the pool and removes the temp
    file). Pillow's bomb guard is off: _decode_one bounds pixels itself, after JPEG reduction."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked by _decode_pass until now
    Image.MAX_IMAGE_PIXELS = None


def _decode_chunk(task: tuple[list[str], int | None, int]) -> tuple[np.ndarray | None, list[str | None]]:
    """Pool worker: the readable images of a chunk as one contiguous (k, 3, H, W) array, and for each
    file None (read) or why it was skipped.

    With size None images keep their own size, and the array is None as soon as one is not a
    square of the same size as the others, at most ``_MAX_NATIVE`` pixels.
    """
    paths, size, max_pixels = task
    images: list[np.ndarray] = []
    status: list[str | None] = []
    for path in paths:
        img = _decode_one(path, size, max_pixels)
        status.append(img if isinstance(img, str) else None)
        if isinstance(img, str):
            continue
        if size is None and (img.shape[0] != img.shape[1] or img.shape[0] > _MAX_NATIVE
                             or (images and img.shape != images[0].shape)):  # fmt: skip
            return None, status
        images.append(img)
    if not images:
        return np.empty((0, 3, 0, 0), dtype=np.uint8), status
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)), status


def _decode_pass(
    paths: list[str], size: int | None, rows: _Rows, progress: Callable[[int, int], None] | None
) -> list[str | None] | None:
    """Decode ``paths`` in parallel into ``rows``, in order; returns None (read) or a skip reason per file.

    With size None, returns None when the images do not all share one square size <= 256.
    """
    total = len(paths)
    procs = max(1, min(os.cpu_count() or 1, total // 64 + 1))  # a few files do not pay for forking many
    chunk = max(1, min(256, -(-total // (procs * 4))))  # ~4 chunks a worker balances load; <=256 keeps progress moving
    tasks = [(paths[i : i + chunk], size, MAX_PIXELS) for i in range(0, total, chunk)]
    status: list[str | None] = []
    if progress:
        progress(0, total)
    # Workers start with SIGTERM blocked, until _worker_init restores its default action. Otherwise the
    # pool's terminate() can reach a worker that has just forked: Python's after-fork reset drops the
    # signal, the worker lives on, and leaving the pool waits for it forever (seen under load).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        pool = multiprocessing.get_context().Pool(procs, initializer=_worker_init)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    with pool:  # leaving kills pending work
        for images, done in _in_order(pool, tasks, window=2 * procs):
            if images is None:
                return None
            if len(images):
                if rows.shape is not None and images.shape[1:] != rows.shape:
                    return None
                rows.append(images)  # readable images packed to the front
            status += done
            if progress:
                progress(len(status), total)
    return status


def _in_order(pool: Any, tasks: list[Any], window: int) -> Iterator[Any]:
    """``pool.imap(_decode_chunk, tasks)``, with at most ``window`` chunks handed out ahead of the one read.

    imap hands every chunk to the workers' pipe at once; when the reader stops early (an error, a user's
    stop) and the pool is terminated, its feeder thread may still be blocked writing into that full pipe,
    and leaving the pool waits for it (16 minutes once, under load). With a few chunks in the pipe, the
    feeder is never blocked.
    """
    pending: deque[Any] = deque()
    rest = iter(tasks)
    for task in itertools.islice(rest, window):
        pending.append(pool.apply_async(_decode_chunk, (task,)))
    while pending:
        result = pending.popleft().get()
        task = next(rest, None)
        if task is not None:
            pending.append(pool.apply_async(_decode_chunk, (task,)))
        yield result


def _decode_folder(
    paths: list[str], image_size: int | None, rows: _Rows, progress: Callable[[int, int], None] | None
) -> list[str | None]:
    """Decode ``paths`` into ``rows``; returns None (read) or a skip reason per file.

    Without ``image_size`` the native size is tried optimistically: a folder of mixed sizes is
    decoded again at 96 px (``progress`` restarts), but that first pass stops within a chunk or so.
    """
    status = _decode_pass(paths, image_size, rows, progress)
    if status is None:
        rows.reset()
        status = _decode_pass(paths, _FOLDER_SIZE, rows, progress)
        assert status is not None, "only the native-size pass gives up"
    return status


def _load_folder(
    root: Path, split: str, data_dir: Path, image_size: int | None, progress: Callable[[int, int], None] | None
) -> ImageSet:
    folder = _split_dir(root, split)
    name = f"folder:{folder}"
    files, labels, classes, scan = _scan(folder)
    if not files:
        skipped = f"; {_skip_summary(folder, scan.counts, scan.examples)}" if scan.counts else ""
        raise UserError(
            f"no images found in {folder} (looked for {'/'.join(IMAGE_EXTENSIONS)}); "
            f"point --data-path at a folder of images or of class sub-folders{skipped}"
        )
    listing = "\n".join(f"{rel}\t{size}\t{mtime}" for rel, size, mtime in files)
    key = {"dataset": "folder", "split": split, "path": str(folder), "size": image_size,
           "files": hashlib.sha256(os.fsencode(listing)).hexdigest()}  # fmt: skip
    stem = _cache_stem(data_dir, f"folder-{root.name}-{split}", key)

    def fill(rows: _Rows) -> tuple[np.ndarray, list[str], dict[str, int], dict[str, str], list[str]]:
        status = _decode_folder([os.path.join(folder, rel) for rel, _, _ in files], image_size, rows, progress)
        failed = _Skipped()
        for (rel, _, _), why in zip(files, status, strict=True):
            if why is not None:
                failed.add(why, rel)
        if len(failed.counts.values()) and sum(failed.counts.values()) == len(files):
            raise UserError(
                f"none of the {len(files)} image files in {folder} could be read "
                f"({_skip_parts(failed.counts, failed.examples)}); check they are valid images "
                f"of at most {MAX_PIXELS // 10**6} megapixels"
            )
        kept = np.asarray(labels, dtype=np.int64)[[why is None for why in status]]
        names = [rel for (rel, _, _), why in zip(files, status, strict=True) if why is None]
        return kept, classes if (kept >= 0).any() else [], dict(failed.counts), failed.examples, names

    images = _read_cache(stem, name) or _build_cache(stem, name, len(files), fill)
    # The scan's skips are not cached: the scan runs on every load and may find others.
    counts: dict[str, int] = Counter(images.skips) + scan.counts
    if not counts:
        return images
    counts = {reason: counts[reason] for reason in _SKIP_LABELS if counts[reason]}
    examples = {**scan.examples, **images.skip_examples}
    summary = _skip_summary(folder, counts, examples)
    _tell(summary)
    return replace(
        images, skipped=sum(counts.values()), skips=counts, skip_examples=examples, notes=[summary, *images.notes]
    )
