"""Datasets as uint8 tensors: bundled digits, CIFAR-10, STL-10 and any folder of images.

Every split is decoded once into ``data_dir/cache/`` as a ``.npy`` file (uint8, NCHW) plus
labels and a small JSON sidecar; later loads memory-map it, so a 60k-image folder opens in
well under a second and training never touches JPEG decoding again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from simclr_core.errors import UserError

if TYPE_CHECKING:
    from simclr_core.config import DataConfig

__all__ = ["DATASETS", "ImageSet", "default_splits", "holdout", "load_split", "split_of", "splits_of"]

DATASETS: tuple[str, ...] = ("digits", "cifar10", "stl10", "folder")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FOLDER_SPLITS: tuple[str, ...] = ("train", "val", "test")
_FIXED_SPLITS = {
    "digits": ["train", "test", "all"],
    "cifar10": ["train", "test"],
    "stl10": ["train", "test", "unlabeled", "train+unlabeled"],
}
_CACHE_VERSION = 2  # bump when the cache layout or decoding changes (2: folder caches list their files)
_DIGITS_SIZE = 32
_FOLDER_SIZE = 96  # used when a folder's images differ in size or are large
_MAX_NATIVE = 256  # larger square images are still resized to keep the cache small
_EXIF_ORIENTATION = 0x0112


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
    skipped: int = 0  # unreadable files skipped while scanning a folder
    paths: list[str] | None = None  # folders: each image's file, absolute, so a user can find it on disk

    @property
    def labelled(self) -> bool:
        """True when every image has a label and the class names are known."""
        return bool(self.classes) and len(self.labels) > 0 and bool((self.labels >= 0).all())

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
    with os.scandir(folder) as entries:
        return any(e.is_dir() and not e.name.startswith(".") for e in entries)


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
    if subset is None or subset >= len(images):
        return images
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:subset].sort().values
    paths = [images.paths[i] for i in keep.tolist()] if images.paths is not None else None
    return replace(images, images=images.images[keep].contiguous(), labels=images.labels[keep], paths=paths)


def split_of(cfg: "DataConfig", split: str, *, subset: int | None = None, seed: int = 0,
             progress: Callable[[int, int], None] | None = None) -> ImageSet:
    """:func:`load_split` with a run's data settings (dataset, folder, data dir, image size, download)."""
    return load_split(cfg.dataset, split, path=cfg.data_path, data_dir=cfg.data_dir, image_size=cfg.image_size,
                      download=cfg.download, subset=subset, seed=seed, progress=progress)


def _resize(images: torch.Tensor, size: int, batch: int = 1024) -> torch.Tensor:
    """Bilinear, antialiased resize of uint8 NCHW images, in batches to bound memory."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
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


def _read_cache(stem: Path, name: str) -> ImageSet | None:
    """The cached split, or None when absent or unreadable (it is then rebuilt)."""
    try:
        meta = json.loads(_file(stem, ".json").read_text())  # written last: marks a complete cache
        classes, skipped, count = list(meta["classes"]), int(meta["skipped"]), meta["count"]
        files = meta.get("files")  # folders only: paths relative to the split folder, in row order
        # Copy-on-write map: writable for torch, yet in-place edits never reach the file.
        images = np.load(_file(stem, ".npy"), mmap_mode="c")
        labels = np.load(_file(stem, ".labels.npy")).astype(np.int64)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if images.ndim != 4 or images.dtype != np.uint8 or not len(images) == len(labels) == count:
        return None
    if files is not None and (not isinstance(files, list) or len(files) != count):
        return None
    paths = [os.path.join(name.removeprefix("folder:"), f) for f in files] if files is not None else None
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), classes, name, skipped, paths)


def _build_cache(stem: Path, name: str,
                 write: Callable[[Path], tuple[np.ndarray, list[str], int, list[str] | None]]) -> ImageSet:
    """Create the cache: ``write(tmp)`` makes the images .npy and returns (labels, classes, skipped, files).

    ``files`` (folders only) names each kept image's file relative to the split folder.

    Each file appears atomically via os.replace, the JSON sidecar last, so an interrupted
    build is never mistaken for a finished one.
    """
    tmp = _file(stem, f".{uuid.uuid4().hex[:12]}.tmp.npy")  # unique: other processes/threads may race us
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        labels, classes, skipped, files = write(tmp)
        os.replace(tmp, _file(stem, ".npy"))
        np.save(tmp, labels.astype(np.int64))
        os.replace(tmp, _file(stem, ".labels.npy"))
        meta = {"count": len(labels), "classes": list(classes), "skipped": int(skipped)}
        if files is not None:
            meta["files"] = files
        _file(tmp, ".json").write_text(json.dumps(meta))
        os.replace(_file(tmp, ".json"), _file(stem, ".json"))
    except OSError as err:
        raise UserError(
            f"could not write the image cache in {stem.parent} ({err.strerror or err}); "
            "free some disk space or pass a writable --data-dir"
        ) from err
    finally:
        _discard(tmp)
        _discard(_file(tmp, ".json"))
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
            f"{'CIFAR-10' if dataset == 'cifar10' else 'STL-10'} is not in {data_dir}/ and {why}: {fix}, or use --dataset folder "
            "--data-path DIR (an image folder, e.g. CIFAR-10 as JPEGs), or --dataset digits (bundled, offline)"
        ) from err
    labels = labels.astype(np.int64)
    classes = list(getattr(ds, "classes", [])) if (labels >= 0).any() else []
    if size is not None:
        data = _resize(torch.from_numpy(np.ascontiguousarray(data)), size).numpy()

    def write(tmp: Path) -> tuple[np.ndarray, list[str], int, None]:
        np.save(tmp, np.ascontiguousarray(data))
        return labels, classes, 0, None

    return _build_cache(stem, name, write)


# ---------------------------------------------------------------- image folders


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _walk(folder: str, prefix: str) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of image files anywhere below ``folder``; hidden entries skipped.

    Plain scandir with string paths: pathlib and os.path.relpath cost seconds on 60k files,
    and this scan runs on every load, cached or not.
    """
    found = []
    with os.scandir(folder) as entries:
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                found += _walk(e.path, f"{prefix}{e.name}/")
            elif _is_image(e.name):
                st = e.stat()
                found.append((prefix + e.name, st.st_size, st.st_mtime_ns))
    return found


def _scan(folder: Path) -> tuple[list[tuple[str, int, int]], list[int], list[str]]:
    """(files as (relative path, size, mtime), labels, classes) of one split.

    Each sub-folder holding images is a class; images directly in ``folder`` get label -1.
    """
    with os.scandir(folder) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    files = [(e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file() and _is_image(e.name)]
    labels = [-1] * len(files)
    classes: list[str] = []
    for entry in entries:
        if entry.is_dir():
            inside = sorted(_walk(entry.path, entry.name + "/"))
            if inside:  # a folder without images is no class
                files += inside
                labels += [len(classes)] * len(inside)
                classes.append(entry.name)
    return files, labels, classes


def _decode_one(path: str, size: int | None) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB image, or None when unreadable.

    With ``size`` the shorter side is resized to it and the centre cropped square.
    """
    try:
        with Image.open(path) as im:
            if size is not None:
                im.draft("RGB", (size, size))  # JPEG: decode big photos at reduced scale, much faster
            if im.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # phone photos stored rotated
                im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = ImageOps.fit(im, (size, size), Image.Resampling.BICUBIC)
        return np.asarray(im)
    except Exception:  # user files: corrupt, truncated or exotic images are skipped, never fatal
        return None


def _decode_chunk(task: tuple[list[str], int | None]) -> tuple[np.ndarray | None, list[bool]]:
    """Pool worker: the readable images of a chunk as one contiguous (k, 3, H, W) array, and which were read.

    With size None images keep their own size, and the array is None as soon as one is not a
    square of the same size as the others, at most ``_MAX_NATIVE`` pixels.
    """
    paths, size = task
    images, ok = [], []
    for path in paths:
        img = _decode_one(path, size)
        ok.append(img is not None)
        if img is None:
            continue
        if size is None and (img.shape[0] != img.shape[1] or img.shape[0] > _MAX_NATIVE
                             or (images and img.shape != images[0].shape)):  # fmt: skip
            return None, ok
        images.append(img)
    if not images:
        return np.empty((0, 3, 0, 0), dtype=np.uint8), ok
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)), ok


def _decode_pass(
    paths: list[str], size: int | None, out: Path, progress: Callable[[int, int], None] | None
) -> list[bool] | None:
    """Decode ``paths`` in parallel into the .npy file ``out``, in order; returns which were readable.

    With size None, returns None when the images do not all share one square size <= 256.
    """
    total = len(paths)
    procs = max(1, min(os.cpu_count() or 1, total // 64 + 1))  # a few files do not pay for forking many
    chunk = max(1, min(256, -(-total // (procs * 4))))  # ~4 chunks a worker balances load; <=256 keeps progress moving
    tasks = [(paths[i : i + chunk], size) for i in range(0, total, chunk)]
    mm, ok, n_ok = None, [], 0
    if progress:
        progress(0, total)
    with multiprocessing.get_context().Pool(procs) as pool:  # leaving the block kills pending work
        for images, read in pool.imap(_decode_chunk, tasks):
            if images is None:
                return None
            if len(images):
                if mm is None:  # shape known only now when keeping the native size
                    mm = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(total, *images.shape[1:]))
                elif images.shape[1:] != mm.shape[1:]:
                    return None
                mm[n_ok : n_ok + len(images)] = images  # readable images packed to the front
                n_ok += len(images)
            ok += read
            if progress:
                progress(len(ok), total)
    if mm is not None and n_ok < total:  # drop the unused tail rows left by skipped files
        packed = out.with_name(out.stem + ".packed.npy")
        try:
            np.save(packed, mm[:n_ok])
            os.replace(packed, out)
        finally:
            _discard(packed)
    elif mm is not None:
        mm.flush()
    return ok


def _decode_folder(
    paths: list[str], image_size: int | None, out: Path, progress: Callable[[int, int], None] | None
) -> list[bool]:
    """Decode ``paths`` into ``out``; returns which were readable.

    Without ``image_size`` the native size is tried optimistically: a folder of mixed sizes is
    decoded again at 96 px (``progress`` restarts), but that first pass stops within a chunk or so.
    """
    ok = _decode_pass(paths, image_size, out, progress)
    if ok is None:
        ok = _decode_pass(paths, _FOLDER_SIZE, out, progress)
    return ok


def _load_folder(
    root: Path, split: str, data_dir: Path, image_size: int | None, progress: Callable[[int, int], None] | None
) -> ImageSet:
    folder = _split_dir(root, split)
    name = f"folder:{folder}"
    files, labels, classes = _scan(folder)
    if not files:
        raise UserError(
            f"no images found in {folder} (looked for {'/'.join(IMAGE_EXTENSIONS)}); "
            "point --data-path at a folder of images or of class sub-folders"
        )
    listing = "\n".join(f"{rel}\t{size}\t{mtime}" for rel, size, mtime in files)
    key = {"dataset": "folder", "split": split, "path": str(folder), "size": image_size,
           "files": hashlib.sha256(listing.encode()).hexdigest()}  # fmt: skip
    stem = _cache_stem(data_dir, f"folder-{root.name}-{split}", key)

    def write(tmp: Path) -> tuple[np.ndarray, list[str], int, list[str]]:
        ok = _decode_folder([os.path.join(folder, rel) for rel, _, _ in files], image_size, tmp, progress)
        if not any(ok):
            raise UserError(
                f"none of the {len(files)} image files in {folder} could be read; check they are valid images"
            )
        kept = np.asarray(labels, dtype=np.int64)[np.asarray(ok)]
        names = [rel for (rel, _, _), read in zip(files, ok) if read]
        return kept, classes if (kept >= 0).any() else [], len(files) - len(kept), names

    cached = _read_cache(stem, name)
    return cached if cached is not None else _build_cache(stem, name, write)
