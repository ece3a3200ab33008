"""Backbone (h) and projection (z) embeddings of a dataset split, cached on disk per checkpoint."""

from __future__ import annotations

import contextlib
import hashlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from simclr_core.config import TrainConfig
from simclr_core.data import datasets as data
from simclr_core.errors import UserError
from simclr_core.hardware import resolve_device
from simclr_core.models import Backbone, Encoder, architecture, build_encoder
from simclr_core.resolve import resolve
from simclr_core.runs import checkpoints
from simclr_core.runs.rundir import CheckpointInfo, RunDir

FEATURES = ("h", "z")
Progress = Callable[[int, int], None]


@torch.no_grad()
def extract_both(
    encoder: Encoder | Backbone,
    images: torch.Tensor,
    *,
    size: int | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    progress: Progress | None = None,
    project: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone (h) and projection (z) embeddings of images, from one backbone pass, encoder in eval mode.

    The one function that embeds images: training's kNN monitor and probe, evaluation, the app and the
    Python API all call it (or :func:`extract`).

    Args:
        encoder: the trained (or random) encoder, or a :class:`~simclr_core.models.Backbone` (h only);
            left in the mode it was in.
        images: (N, 3, H, W) uint8, or float in [0, 1] (views), on any device.
        size: resize to this side first (the views' crop size) when it differs from H.
        progress: called with (done, total) after every batch.
        project: also compute z (the encoder's head); when False, z is empty.

    Returns:
        (h (N, F), z (N, D)), float32 on the CPU.
    """
    was_training = encoder.training
    encoder.eval()
    hs, zs = [], []
    n = len(images)
    batch_size = batch_for(max(size or 0, images.shape[-1] if images.ndim == 4 else 0), batch_size)
    for start in range(0, n, batch_size):
        x = images[start : start + batch_size].to(device, non_blocking=True)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        if size and size != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        h = encoder.features(x)
        hs.append(h.float().cpu())  # a device-to-host copy per batch: the one sync point of the loop
        if project:
            head = cast(Encoder, encoder).head  # project=True is for an Encoder: a Backbone has no head
            zs.append(head(h).float().cpu())  # the head is a small MLP: z costs next to nothing
        if progress:
            progress(min(n, start + batch_size), n)
    encoder.train(was_training)
    empty = torch.empty(0)
    return (torch.cat(hs) if hs else empty), (torch.cat(zs) if zs else empty)


MAX_BATCH_PIXELS = 2**23  # input pixels per embedding batch: 512 images up to 128 px, 8 at 1024 px


def batch_for(side: int, batch_size: int = 512) -> int:
    """``batch_size``, or fewer images of ``side`` pixels: a batch of 512 views of 1024 px asks about 40 GB
    of a CPU's memory (the kernel then kills the run without a word)."""
    return max(1, min(batch_size, MAX_BATCH_PIXELS // max(side * side, 1)))


def extract(
    encoder: Encoder | Backbone,
    images: torch.Tensor,
    *,
    feature: str = "h",
    size: int | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    progress: Progress | None = None,
) -> torch.Tensor:
    """One feature of :func:`extract_both`: "h" (backbone, used for kNN / probe) or "z" (projection, where
    the loss lives); (N, F) float32 on the CPU."""
    if feature not in FEATURES:
        raise UserError(f"unknown feature {feature!r}: use h (backbone) or z (projection)")
    h, z = extract_both(
        encoder, images, size=size, device=device, batch_size=batch_size, progress=progress, project=feature == "z"
    )
    return h if feature == "h" else z


def checkpoint_path(run: RunDir, checkpoint: str | Path = "last") -> Path:
    """The file behind "last" or a path; a UserError if it is not there yet."""
    path = run.last_ckpt if str(checkpoint) == "last" else Path(checkpoint)
    if not path.is_file():
        raise UserError(f"run '{run.name}' has no checkpoint {path.name} yet: train it for an epoch first")
    return path


def checkpoint_meta(run: RunDir, checkpoint: str | Path = "last", random_init: bool = False) -> dict:
    """{"epoch", "step", "path", "label"} of a checkpoint (zeros and None for the random-init baseline); the label
    says "epoch 5", or "epoch 3, step 12 of 50" for a checkpoint saved by a stop inside an epoch."""
    if random_init:
        return {"epoch": 0, "step": 0, "path": None, "label": "random init"}
    path = checkpoint_path(run, checkpoint)
    return _meta(checkpoints.load_training(path), path)


def _meta(ckpt: dict, path: Path) -> dict:
    info = CheckpointInfo.of(ckpt)
    label = info.label() if info else f"epoch {ckpt['epoch']}"
    return {"epoch": ckpt["epoch"], "step": ckpt["step"], "path": str(path), "label": label}


def load_encoder(
    run: RunDir, checkpoint: str | Path = "last", device: torch.device | str = "cpu", random_init: bool = False
) -> tuple[Encoder, dict]:
    """The encoder of a run's checkpoint (or a fresh random one of the same architecture).

    Args:
        checkpoint: "last" for ``last.pt`` or a path to a checkpoint file.
        random_init: build the architecture with the run's seed and no training (the baseline).

    Returns:
        (encoder on ``device`` in eval mode, :func:`checkpoint_meta`)
    """
    cfg = run_config(run)
    if random_init:
        torch.manual_seed(cfg.run.seed)
        encoder = build_encoder(architecture(cfg))
        return encoder.to(device).eval(), checkpoint_meta(run, random_init=True)
    path = checkpoint_path(run, checkpoint)
    ckpt = checkpoints.load_training(path)
    return _encoder_of(run, ckpt, path).to(device).eval(), _meta(ckpt, path)


def run_config(run: RunDir) -> TrainConfig:
    """The run's config, resolved. Training wrote it resolved; only a run that failed before its data
    loaded lacks the image side, and 32 px (CIFAR's) stands in for it there."""
    cfg = run.config()
    return resolve(cfg, cfg.data.image_size or 32)


def _encoder_of(run: RunDir, ckpt: dict, path: Path) -> Encoder:
    # a checkpoint of another model must not be evaluated or embedded under this run's name
    checkpoints.check_architecture(ckpt["arch"], architecture(run_config(run)), path)
    encoder = build_encoder(ckpt["arch"])
    checkpoints.load_state(encoder, checkpoints.encoder_state(ckpt["model"]), path)
    return encoder


# ---- pinned checkpoints: the app's explorer keeps showing the checkpoint it opened with ----------------
#
# Training replaces last.pt every epoch. A view pinned to one checkpoint (by its checkpoint_key) reads
# that checkpoint's cached embeddings; to embed another split or feature of it after training moved on,
# the encoder's weights of every checkpoint embedded while the run trains are kept beside the caches
# (SNAPSHOTS_KEPT per run, newest first: about 45 MB each for a ResNet-18).

SNAPSHOTS_KEPT = 2


def snapshot_path(run: RunDir, key: str) -> Path:
    """Where the encoder weights of the checkpoint named ``key`` are kept once training moved past it."""
    return run.embeddings_dir / f"encoder-{_tag(run.last_ckpt, key)}.pt"


def pinned_encoder(run: RunDir, key: str, device: torch.device | str = "cpu") -> Encoder:
    """The encoder of the run's checkpoint named ``key`` (:func:`checkpoint_key` of last.pt when it was pinned):
    last.pt while it is still that checkpoint, else its kept weights; a UserError when neither is left."""
    path = run.last_ckpt
    if checkpoint_key(path) == key:
        ckpt = checkpoints.load_training(path)
        if checkpoint_key(path) == key:  # not replaced while it was read: these are the pinned weights
            if run.writer_alive():  # training goes on and will replace it: keep the weights for this view
                _keep_snapshot(run, key, ckpt)
            return _encoder_of(run, ckpt, path).to(device).eval()
    snapshot = snapshot_path(run, key)
    if snapshot.is_file():
        return _encoder_of(run, checkpoints.load_training(snapshot), snapshot).to(device).eval()
    raise UserError(
        f"the checkpoint of run '{run.name}' that this view shows has been replaced by a newer one, and "
        "its weights were not kept; move to the newest checkpoint"
    )


def checkpoint_info(run: RunDir, key: str) -> CheckpointInfo | None:
    """Where the run's checkpoint named ``key`` stands: from ``last.json``, else read from last.pt (while it is
    that checkpoint) or from its kept weights; None when it is gone or unreadable."""
    info = run.checkpoint_info(key)
    if info is not None:
        return info
    for path in (run.last_ckpt, snapshot_path(run, key)):
        if path.is_file() and (path != run.last_ckpt or checkpoint_key(path) == key):
            try:
                return CheckpointInfo.of(checkpoints.load_training(path))
            except UserError:
                return None
    return None


def _keep_snapshot(run: RunDir, key: str, ckpt: dict) -> None:
    path = snapshot_path(run, key)
    if path.is_file():
        return
    # what load_training and the labels need; the optimiser and the RNG states are for resuming only
    kept = {k: ckpt[k] for k in ("format", "method", "arch", "epoch", "step", "steps_per_epoch") if k in ckpt}
    kept["model"] = {k: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    with contextlib.suppress(OSError):  # a full disk costs only the pinned view's later splits
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoints.save_atomic(kept, path)
        for old in sorted(path.parent.glob("encoder-*.pt"), key=lambda p: p.stat().st_mtime)[:-SNAPSHOTS_KEPT]:
            old.unlink(missing_ok=True)


@dataclass
class Embeddings:
    """Rows of one split: embedding, label (-1 unlabelled) and index into the split."""

    embeddings: np.ndarray  # (N, F) float32
    labels: np.ndarray  # (N,) int64
    indices: np.ndarray  # (N,) int64
    classes: list[str]
    key: str = ""  # names the checkpoint, split and feature: a cache key for what is derived from these rows

    def save_npz(self, path: str | Path) -> None:
        """Export with arrays ``embeddings``, ``labels``, ``indices`` (and ``classes``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        try:
            np.savez(
                tmp,
                embeddings=self.embeddings,
                labels=self.labels,
                indices=self.indices,
                classes=np.array(self.classes, dtype=str),
            )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load_npz(cls, path: str | Path) -> Embeddings:
        """Read :meth:`save_npz`'s file; ValueError if it does not hold consistent arrays."""
        with np.load(path, allow_pickle=False) as z:
            out = cls(z["embeddings"], z["labels"], z["indices"], [str(c) for c in z["classes"]], Path(path).stem)
        if out.embeddings.ndim != 2 or not len(out.embeddings) == len(out.labels) == len(out.indices):
            raise ValueError(f"{path} holds inconsistent arrays")
        return out


def load_cached(path: str | Path) -> Embeddings | None:
    """An embeddings cache file, or None after deleting it when it is damaged (truncated, pickled,
    foreign), so the next request computes it again instead of failing on it forever."""
    try:
        return Embeddings.load_npz(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        # a folder in the file's place, or an embeddings/ that is a file, is not ours to delete: the
        # embeddings are then computed every time, uncached, as in a read-only run folder
        with contextlib.suppress(OSError):
            Path(path).unlink(missing_ok=True)
        return None


def checkpoint_key(path: Path) -> str:
    """Changes whenever a new checkpoint is written at ``path`` (size and mtime; "none" while there is
    none): part of every cache key derived from its weights."""
    try:
        st = path.stat()
    except OSError:
        return "none"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _tag(path: Path, key: str) -> str:
    return hashlib.sha1(f"{path.resolve()}:{key}".encode()).hexdigest()[:12]


def embedding_cache(
    run: RunDir,
    split: str,
    feature: str = "h",
    checkpoint: str | Path = "last",
    random_init: bool = False,
    key: str | None = None,
) -> Path:
    """The file :func:`embed_split` keeps these embeddings in; its name holds the checkpoint's size and mtime
    (``key``: those of a checkpoint pinned earlier, :func:`checkpoint_key`, which may be gone by now)."""
    if random_init:
        tag = f"random-seed{run.config().run.seed}"
    elif key is not None:
        tag = _tag(run.last_ckpt if str(checkpoint) == "last" else Path(checkpoint), key)
    else:
        path = checkpoint_path(run, checkpoint)
        tag = _tag(path, checkpoint_key(path))
    return run.embeddings_dir / f"{split.replace('+', '_')}-{feature}-{tag}.npz"


def embed_split(
    run: RunDir,
    split: str,
    feature: str = "h",
    checkpoint: str | Path = "last",
    device: str = "auto",
    random_init: bool = False,
    progress: Progress | None = None,
    key: str | None = None,
) -> Embeddings:
    """Embeddings of a split for a run's checkpoint, computed once and then read from the cache.

    A newer checkpoint is embedded afresh (:func:`embedding_cache`); ``key`` pins the checkpoint of
    last.pt that had that :func:`checkpoint_key` (:func:`pinned_encoder`). A damaged cache file is
    computed again; a run folder that cannot be written still gets its embeddings, uncached.
    """
    cfg = run.config()
    key = None if random_init or str(checkpoint) != "last" else key
    cache = embedding_cache(run, split, feature, checkpoint, random_init, key)
    cached = load_cached(cache)
    if cached is not None:
        return cached
    images = data.split_of(cfg.data, split)
    dev = resolve_device(device)
    if key is not None:
        encoder = pinned_encoder(run, key, dev)
    else:
        encoder, _ = load_encoder(run, checkpoint, dev, random_init=random_init)
    emb = extract(encoder, images.images, feature=feature, size=cfg.views.crop_size, device=dev, progress=progress)
    result = Embeddings(
        emb.numpy(),
        images.labels.numpy().astype(np.int64),
        np.arange(len(images), dtype=np.int64),
        list(images.classes),
        cache.stem,
    )
    with contextlib.suppress(OSError):  # read-only or full: the caller still gets its embeddings
        result.save_npz(cache)
    return result
