"""Datasets as uint8 tensors: bundled digits, CIFAR-10, STL-10 and any folder of images, and their splits.

:func:`load_split` loads one split as an :class:`~simclr_core.data.imageset.ImageSet`; the functions
around it name a dataset's splits, pick those a run trains and evaluates on, and hold out a query set.
A folder is scanned by :mod:`~simclr_core.data.folder` and its files decoded by
:mod:`~simclr_core.data.decode`; every split is decoded once into :mod:`~simclr_core.data.cache`, which
later loads memory-map. Entries of a folder that cannot be read are skipped and counted
(``ImageSet.skips``, one line in ``ImageSet.notes`` and the log), never fatal.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError

import numpy as np
import torch
import torch.nn.functional as F

from simclr_core.data import decode
from simclr_core.data.cache import Fill, Rows, build_cache, cache_stem, mb, read_cache
from simclr_core.data.folder import (
    IMAGE_EXTENSIONS,
    SKIP_LABELS,
    Skipped,
    folder_root,
    has_class_dirs,
    printable,
    scan,
    skip_parts,
    skip_summary,
    split_dir,
)
from simclr_core.data.imageset import ImageSet
from simclr_core.errors import UserError
from simclr_core.hardware import available_memory as _available_memory

if TYPE_CHECKING:
    from simclr_core.config import DataConfig

# ImageSet, IMAGE_EXTENSIONS and printable live in imageset and folder; callers reach them here, as before.
__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "ImageSet",
    "default_splits",
    "held_out",
    "holdout",
    "load_split",
    "pretrain_split",
    "printable",
    "split_of",
    "splits_of",
]

DATASETS: tuple[str, ...] = ("digits", "cifar10", "stl10", "folder")
FOLDER_SPLITS: tuple[str, ...] = ("train", "val", "test")
_FIXED_SPLITS = {
    "digits": ["train", "test", "all"],
    "cifar10": ["train", "test"],
    "stl10": ["train", "test", "unlabeled", "train+unlabeled"],
}
_DIGITS_SIZE = 32
_log = logging.getLogger(__name__)
_told: set[str] = set()  # notes already logged by this process: a split is often loaded several times


def splits_of(dataset: str, path: str | None = None) -> list[str]:
    """Names of the splits a dataset offers (folder: sub-folders train/val/test that exist, else ["all"])."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if dataset != "folder":
        return list(_FIXED_SPLITS[dataset])
    root = folder_root(path)
    return [s for s in FOLDER_SPLITS if (root / s).is_dir()] or ["all"]


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
    root = folder_root(path)
    pretrain = "train" if "train" in splits else splits[0]
    query = next((s for s in ("test", "val") if s in splits and s != pretrain), None)
    if not has_class_dirs(split_dir(root, pretrain)):
        return pretrain, None, None
    if query is not None and not has_class_dirs(split_dir(root, query)):
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
        images = _load_folder(folder_root(path), split, Path(data_dir), image_size, progress)
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
            f"--image-size {size} makes the {n} images take {mb(need):,} MB of memory, and "
            f"{mb(avail):,} MB are free; use --image-size {fits} or less"
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


def _tell(note: str) -> None:
    """Log a note for the user once per process (a split is often loaded several times per run)."""
    if note and note not in _told:
        _told.add(note)
        _log.warning(note)


def _build(stem: Path, name: str, total: int, fill: Fill) -> ImageSet:
    """:func:`~simclr_core.data.cache.build_cache`, logging its note when the images could not be cached."""
    images = build_cache(stem, name, total, fill)
    for note in images.notes:
        _tell(note)
    return images


# ---------------------------------------------------------------- torchvision


def _load_torchvision(dataset: str, split: str, data_dir: Path, size: int | None, download: bool) -> ImageSet:
    name = f"{dataset}/{split}"
    stem = cache_stem(data_dir, name, {"dataset": dataset, "split": split,
                                        "root": str(data_dir.resolve()), "size": size})  # fmt: skip
    cached = read_cache(stem, name)
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

    def fill(rows: Rows) -> tuple[np.ndarray, list[str], dict[str, int], dict[str, str], None]:
        rows.append(data)
        return labels, classes, {}, {}, None

    return _build(stem, name, len(data), fill)


# ---------------------------------------------------------------- image folders


def _load_folder(
    root: Path, split: str, data_dir: Path, image_size: int | None, progress: Callable[[int, int], None] | None
) -> ImageSet:
    """One split of an image folder: scanned at every load, decoded once into the cache."""
    folder = split_dir(root, split)
    name = f"folder:{folder}"
    max_pixels = decode.MAX_PIXELS  # the decoder's bound, named in what this load tells the user
    files, labels, classes, scanned = scan(folder)
    if not files:
        skipped = f"; {skip_summary(folder, scanned.counts, scanned.examples, max_pixels)}" if scanned.counts else ""
        raise UserError(
            f"no images found in {folder} (looked for {'/'.join(IMAGE_EXTENSIONS)}); "
            f"point --data-path at a folder of images or of class sub-folders{skipped}"
        )
    listing = "\n".join(f"{rel}\t{size}\t{mtime}" for rel, size, mtime in files)
    key = {"dataset": "folder", "split": split, "path": str(folder), "size": image_size,
           "files": hashlib.sha256(os.fsencode(listing)).hexdigest()}  # fmt: skip
    stem = cache_stem(data_dir, f"folder-{root.name}-{split}", key)

    def fill(rows: Rows) -> tuple[np.ndarray, list[str], dict[str, int], dict[str, str], list[str]]:
        status = decode.decode_folder([os.path.join(folder, rel) for rel, _, _ in files], image_size, rows, progress)
        failed = Skipped()
        for (rel, _, _), why in zip(files, status, strict=True):
            if why is not None:
                failed.add(why, rel)
        if len(failed.counts.values()) and sum(failed.counts.values()) == len(files):
            raise UserError(
                f"none of the {len(files)} image files in {folder} could be read "
                f"({skip_parts(failed.counts, failed.examples, max_pixels)}); check they are valid images "
                f"of at most {max_pixels // 10**6} megapixels"
            )
        kept = np.asarray(labels, dtype=np.int64)[[why is None for why in status]]
        names = [rel for (rel, _, _), why in zip(files, status, strict=True) if why is None]
        return kept, classes if (kept >= 0).any() else [], dict(failed.counts), failed.examples, names

    images = read_cache(stem, name) or _build(stem, name, len(files), fill)
    # The scan's skips are not cached: the scan runs on every load and may find others.
    counts: dict[str, int] = Counter(images.skips) + scanned.counts
    if not counts:
        return images
    counts = {reason: counts[reason] for reason in SKIP_LABELS if counts[reason]}
    examples = {**scanned.examples, **images.skip_examples}
    summary = skip_summary(folder, counts, examples, max_pixels)
    _tell(summary)
    return replace(
        images, skipped=sum(counts.values()), skips=counts, skip_examples=examples, notes=[summary, *images.notes]
    )
