"""Decoding a folder's image files, in parallel worker processes, into the rows of a split.

Any file Pillow reads becomes a uint8 RGB image: 16-bit greyscale is scaled, not clipped, and phone
photos are turned upright. Corrupt files and images over :data:`MAX_PIXELS` are skipped with a
reason, never fatal. Rows come back in file order, whatever order the workers finish in.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:
    from simclr_core.data.cache import Rows

# Images with more pixels than this are skipped (counted as "too_large"): decoding one costs about
# 7 bytes a pixel (the file's mode, then RGB), so 64 MP is ~450 MB per worker process. JPEGs are
# first decoded at reduced scale (Image.draft) to the size the cache needs, and checked after that,
# so a 12000x12000 photo still loads; a PNG, TIFF, ... of that size cannot be reduced while decoding.
MAX_PIXELS = 64_000_000
_FOLDER_SIZE = 96  # used when a folder's images differ in size or are large
_MAX_NATIVE = 256  # larger square images are still resized to keep the cache small
_EXIF_ORIENTATION = 0x0112


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
    paths: list[str], size: int | None, rows: Rows, progress: Callable[[int, int], None] | None
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


def decode_folder(
    paths: list[str], image_size: int | None, rows: Rows, progress: Callable[[int, int], None] | None
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
