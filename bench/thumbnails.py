"""Benchmark: the map's thumbnails on real CIFAR-10: bytes per image and time per 10k images for each
lossless format (and JPEG for reference), then the store (simclr_core.explorer.thumbnails) on both splits.

    python bench/thumbnails.py                      # ../shared/data/cifar10-jpg.tar.gz, unpacked to /tmp
    python bench/thumbnails.py --data DIR --n 10000

For each format, the first ``--n`` training images are written one file each into a fresh folder:
"bytes" is the files' mean size (what a browser fetches), "on disk" their mean allocated size (whole
file-system blocks, what ``du`` counts), "s/10k" the encode-and-write time per 10,000 images.
"lossless" checks every image decodes to its pixels.
"""

from __future__ import annotations

import argparse
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

from simclr_core.data.datasets import load_split  # noqa: E402
from simclr_core.explorer.thumbnails import MB, ThumbnailStore  # noqa: E402
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 image folder or .tar.gz")
    p.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "simclr-bench-thumbs")
    p.add_argument("--n", type=int, default=10_000, help="images per format [default: 10000]")
    p.add_argument("--slow-n", type=int, default=1_000, help="images for WebP method 6, ~25 ms each [default: 1000]")
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
