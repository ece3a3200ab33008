"""Benchmark: the map's thumbnails on real CIFAR-10: bytes per image and time per 10k images for each
lossless format (and JPEG for reference), then the store (simclr_core.explorer.thumbnails) on both splits.

    python bench/thumbnails.py                      # ../shared/data/cifar10-jpg.tar.gz, unpacked to /tmp
    python bench/thumbnails.py --data DIR --n 10000
    python bench/thumbnails.py --atlas              # sprite atlases (issue 19): formats at 50k, the store at 1M

``--atlas``: the store's sprite atlases instead of one file per image. For each format and atlas width,
``--atlas-n`` training images (50k) are written as the store writes them (``_write_files``: tiles pasted
into one array per atlas, encoded whole, ``WRITERS`` threads): "s/1k" per 1,000 images, "on disk" the
set's allocated bytes, "atlas" the mean atlas file, "lossless" every tile of the first atlas checked
against its pixels. Then ``ThumbnailStore.write`` on 50k and on ``--million`` images (CIFAR-10's 60k
tiled), and with one writer thread against the default.

For each format, the first ``--n`` training images are written one file each into a fresh folder:
"bytes" is the files' mean size (what a browser fetches), "on disk" their mean allocated size (whole
file-system blocks, what ``du`` counts), "s/10k" the encode-and-write time per 10,000 images.
"lossless" checks every image decodes to its pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402

from simclr_core.data.datasets import ImageSet, load_split  # noqa: E402
from simclr_core.explorer import thumbnails  # noqa: E402
from simclr_core.explorer.thumbnails import MB, ThumbnailStore, digest  # noqa: E402
from train_cifar import DEFAULT_DATA, image_folder  # noqa: E402

# name, file extension, Pillow save options, lossless
FORMATS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("PNG level 1 (before)", "png", {"compress_level": 1, "optimize": False}, True),
    ("PNG level 6", "png", {"compress_level": 6}, True),
    ("PNG level 9 + optimize", "png", {"optimize": True}, True),
    ("WebP lossless method 0", "webp", {"lossless": True, "method": 0}, True),
    ("WebP lossless method 4", "webp", {"lossless": True, "method": 4}, True),
    ("WebP lossless method 6", "webp", {"lossless": True, "method": 6}, True),
    ("JPEG q90 (lossy, reference)", "jpg", {"quality": 90}, False),
]


def measure(pixels: np.ndarray, folder: Path, ext: str, options: dict[str, Any], lossless: bool) -> dict[str, float]:
    folder.mkdir(parents=True)
    start = time.perf_counter()
    for i, img in enumerate(pixels):
        Image.fromarray(img).save(folder / f"{i}.{ext}", **options)
    took = time.perf_counter() - start
    stats = [os.stat(folder / f"{i}.{ext}") for i in range(len(pixels))]
    exact = (
        all(
            np.array_equal(np.asarray(Image.open(folder / f"{i}.{ext}").convert("RGB")), img)
            for i, img in enumerate(pixels)
        )
        if lossless
        else False
    )
    shutil.rmtree(folder)
    return {
        "bytes": float(np.mean([s.st_size for s in stats])),
        "disk": float(np.mean([s.st_blocks * 512 for s in stats])),
        "s_per_10k": took / len(pixels) * 10_000,
        "exact": float(exact),
    }


# name, extension, Pillow options (the store's SAVE_OPTIONS for that extension while measured), lossless
ATLAS_FORMATS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("PNG level 1", "png", {"compress_level": 1, "optimize": False}, True),
    ("PNG level 6", "png", {"compress_level": 6}, True),
    ("WebP lossless method 0", "webp", {"lossless": True, "method": 0}, True),
    ("WebP lossless method 4", "webp", {"lossless": True, "method": 4}, True),
    ("JPEG q90 (lossy)", "jpg", {"quality": 90}, False),
]


def _set_bytes(folder: Path) -> tuple[int, int]:
    """(allocated bytes, files) of a set folder."""
    stats = [p.stat() for p in folder.iterdir()]
    return sum(s.st_blocks * 512 for s in stats), len(stats)


def _first_atlas_exact(images: ImageSet, folder: Path, ext: str) -> bool:
    m = json.loads((folder / "atlas.json").read_text())
    t, c = m["tile"], m["cols"]
    pic = np.asarray(Image.open(folder / f"atlas-0.{ext}").convert("RGB"))
    for r in range(min(len(images), c * c)):
        y, x = (r // c) * t, (r % c) * t
        if not np.array_equal(pic[y : y + t, x : x + t], images.images[r].numpy().transpose(1, 2, 0)):
            return False
    return True


def _threads() -> int:
    """The writer threads the store uses here (WRITERS, at most one per core)."""
    return max(1, min(thumbnails.WRITERS, os.cpu_count() or 1))


def atlas_formats(images: ImageSet, scratch: Path, widths: list[int]) -> None:
    print(f"\natlases of {len(images):,} images, {_threads()} writer threads")
    print(f"{'format':26s} {'width':>5s} {'files':>5s} {'s/1k':>6s} {'on disk MB':>10s} {'atlas KB':>9s}  lossless")
    saved = dict(thumbnails.SAVE_OPTIONS), thumbnails.ATLAS_PX
    try:
        for width in widths:
            for name, ext, options, lossless in ATLAS_FORMATS:
                thumbnails.ATLAS_PX, thumbnails.SAVE_OPTIONS[ext] = width, options
                folder = scratch / "atlas-fmt"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                start = time.perf_counter()
                ThumbnailStore._write_files(images, folder, ext, None)
                took = time.perf_counter() - start
                size, files = _set_bytes(folder)
                atlases = [p.stat().st_size for p in folder.glob(f"atlas-*.{ext}")]
                exact = ("yes" if _first_atlas_exact(images, folder, ext) else "NO") if lossless else "-"
                shutil.rmtree(folder)
                print(
                    f"{name:26s} {width:5d} {files:5d} {took / len(images) * 1000:6.3f} {size / MB:10.1f} "
                    f"{np.mean(atlases) / 1024:9.0f}  {exact}",
                    flush=True,
                )
    finally:
        thumbnails.SAVE_OPTIONS.update(saved[0])
        thumbnails.ATLAS_PX = saved[1]


def atlas_store(images: ImageSet, scratch: Path, label: str) -> None:
    thumbs = scratch / "atlas-store"
    shutil.rmtree(thumbs, ignore_errors=True)
    store = ThumbnailStore(thumbs, max_bytes=100_000 * MB)
    ticks: list[float] = []
    start, cpu = time.perf_counter(), time.process_time()
    out = store.write(images, lambda done, total: ticks.append(time.perf_counter()))
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    size, files = _set_bytes(out)
    gaps = np.diff([start, *ticks])
    print(
        f"  {label:34s} {len(images):9,} images {took:7.1f} s ({took / len(images) * 1000:.3f} s/1k; "
        f"CPU {cpu / len(images) * 1000:.3f} s/1k), "
        f"{size / MB:7.1f} MB on disk in {files:,} files, {len(ticks)} progress calls "
        f"(longest gap {gaps.max():.2f} s)",
        flush=True,
    )
    assert out.name == digest(images) and store.manifest(out.name)["count"] == len(images)
    start = time.perf_counter()
    gone = ThumbnailStore(thumbs, max_bytes=0, in_use_s=0).evict()
    print(f"  evict() of that set: {len(gone)} set in {time.perf_counter() - start:.2f} s")
    shutil.rmtree(thumbs, ignore_errors=True)


def tiled(train: ImageSet, test: ImageSet, n: int) -> ImageSet:
    """``n`` CIFAR-like images: the 60k real ones repeated (3 GB of uint8 at 1M)."""
    both = torch.cat([train.images, test.images])
    reps = -(-n // len(both))
    x = both.repeat(reps, 1, 1, 1)[:n]
    return ImageSet(x, torch.zeros(n, dtype=torch.long), [], f"cifar10-tiled-{n}")


def atlas_main(args: argparse.Namespace, train: ImageSet, test: ImageSet) -> None:
    part = ImageSet(train.images[: args.atlas_n], train.labels[: args.atlas_n], train.classes, "bench-50k")
    if not args.no_formats:
        atlas_formats(part, args.scratch, [1024, 2048])
    print(f"\nThumbnailStore.write (atlas {thumbnails.ATLAS_PX} px, {thumbnails.SAVE_OPTIONS['png']}):")
    atlas_store(part, args.scratch, f"{len(part):,}, {_threads()} threads")
    writers = thumbnails.WRITERS
    thumbnails.WRITERS = 1
    try:
        atlas_store(part, args.scratch, f"{len(part):,}, 1 thread")
    finally:
        thumbnails.WRITERS = writers
    big = tiled(train, test, args.million)
    atlas_store(big, args.scratch, f"{len(big):,} (CIFAR-10 tiled), {_threads()} threads")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 image folder or .tar.gz")
    p.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "simclr-bench-thumbs")
    p.add_argument("--n", type=int, default=10_000, help="images per format [default: 10000]")
    p.add_argument("--slow-n", type=int, default=1_000, help="images for WebP method 6, ~25 ms each [default: 1000]")
    p.add_argument("--atlas", action="store_true", help="measure sprite atlases (issue 19) instead")
    p.add_argument("--atlas-n", type=int, default=50_000, help="images per atlas format [default: 50000]")
    p.add_argument("--no-formats", action="store_true", help="with --atlas: only the store's writes")
    p.add_argument("--million", type=int, default=1_000_000, help="images of the large store write")
    args = p.parse_args()

    args.scratch.mkdir(parents=True, exist_ok=True)
    root = image_folder(args.data.resolve(), args.scratch)
    cache = str(args.scratch / "data")
    train = load_split("folder", "train", path=str(root), data_dir=cache)
    test = load_split("folder", "test", path=str(root), data_dir=cache)
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Pillow {Image.__version__}; {len(train):,} train + {len(test):,} test"
        f" images of {tuple(train.images.shape[1:])}"
    )
    if args.atlas:
        atlas_main(args, train, test)
        return
    pixels = train.images[: args.n].numpy().transpose(0, 2, 3, 1).copy()

    print(f"\n{'format':30s} {'bytes':>7s} {'on disk':>8s} {'s/10k':>7s}  lossless  (mean per image)")
    for name, ext, options, lossless in FORMATS:
        part = pixels[: args.slow_n] if options.get("method") == 6 else pixels
        m = measure(part, args.scratch / "fmt", ext, options, lossless)
        exact = ("yes" if m["exact"] else "NO") if lossless else "-"
        print(
            f"{name:30s} {m['bytes']:7.0f} {m['disk']:8.0f} {m['s_per_10k']:7.1f}  {exact:8s}  ({len(part):,} images)"
        )

    thumbs = args.scratch / "thumbs"
    shutil.rmtree(thumbs, ignore_errors=True)
    store = ThumbnailStore(thumbs, max_bytes=1024 * MB)
    print(f"\nThumbnailStore.write (cap {store.max_bytes // MB} MB):")
    for split in (train, test):
        start = time.perf_counter()
        store.write(split)
        print(f"  {split.name:40s} {len(split):6,} images  {time.perf_counter() - start:6.1f} s")
    start = time.perf_counter()
    size = store.size()
    took = time.perf_counter() - start
    files = sum(s.files for s in store.sets())
    print(f"  size(): {size / MB:.1f} MB on disk for {files:,} files, counted in {took:.2f} s")
    for s in store.sets():
        print(f"    {s.name}  {s.files:6,} files  {s.bytes / MB:6.1f} MB")
    small = ThumbnailStore(thumbs, max_bytes=100 * MB, in_use_s=0)
    start = time.perf_counter()
    gone, took = small.evict(), time.perf_counter() - start
    print(f"  evict() under a 100 MB cap: removed {gone} in {took:.2f} s; now {small.size() / MB:.1f} MB")
    shutil.rmtree(thumbs, ignore_errors=True)


if __name__ == "__main__":
    main()
