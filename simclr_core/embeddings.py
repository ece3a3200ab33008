"""Backbone (h) and projection (z) embeddings of a dataset split, cached on disk per checkpoint.

A split is embedded :data:`CHUNK_ROWS` rows at a time, each chunk streamed into the cache file as it
comes (an uncompressed ``.npz``, the format :meth:`Embeddings.save_npz` writes and every reader knows),
so the embedding costs a chunk of memory on top of the images, whatever the split's size; the file is
written under a temp name and renamed when complete. Under ``torchrun`` every rank embeds a contiguous
shard of the rows into a shard file beside the cache and rank 0 joins them, chunk by chunk, into the
one cache file (the run folder must be on a file system every rank sees, as checkpoints need).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from simclr_core import distributed
from simclr_core.config import TrainConfig
from simclr_core.data import datasets as data
from simclr_core.errors import UserError
from simclr_core.files import remove_stale_temps
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
    """The file behind "last", "best" or a path (:meth:`RunDir.checkpoint_file`); a UserError if it is not there yet."""
    return run.checkpoint_file(checkpoint)


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


CHUNK_ROWS = 16_384  # rows embedded and written at a time: 128 MB of h for a 2048-wide backbone


def embed_split(
    run: RunDir,
    split: str,
    feature: str = "h",
    checkpoint: str | Path = "last",
    device: str = "auto",
    random_init: bool = False,
    progress: Progress | None = None,
    key: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Embeddings:
    """Embeddings of a split for a run's checkpoint, computed once and then read from the cache.

    A newer checkpoint is embedded afresh (:func:`embedding_cache`); ``key`` pins the checkpoint of
    last.pt that had that :func:`checkpoint_key` (:func:`pinned_encoder`). A damaged cache file is
    computed again; a run folder that cannot be written still gets its embeddings, uncached. The rows
    are embedded and written ``chunk_rows`` at a time (:func:`cache_embeddings`); ``progress`` gets
    (rows done, rows) after each batch. Under torchrun every rank calls it, embeds its shard, and gets
    the whole split back.
    """
    key = None if random_init or str(checkpoint) != "last" else key
    cache = embedding_cache(run, split, feature, checkpoint, random_init, key)
    cached = load_cached(cache)
    if cached is not None:
        return cached
    written = cache_embeddings(run, split, feature, checkpoint, device, random_init, progress, key, chunk_rows)
    if written is not None:
        cached = load_cached(written)
        if cached is not None:
            return cached
    # the run folder cannot be written (read-only, full, something else in the cache's place): in memory
    encoder, images, dev, size = _setup(run, split, checkpoint, device, random_init, key)
    parts = list(_chunks(encoder, images, 0, len(images), feature, size, dev, chunk_rows, progress))
    width = parts[0].shape[1] if parts else 0
    return Embeddings(
        np.concatenate(parts) if parts else np.zeros((0, width), np.float32),
        images.labels.numpy().astype(np.int64),
        np.arange(len(images), dtype=np.int64),
        list(images.classes),
        cache.stem,
    )


def cache_embeddings(
    run: RunDir,
    split: str,
    feature: str = "h",
    checkpoint: str | Path = "last",
    device: str = "auto",
    random_init: bool = False,
    progress: Progress | None = None,
    key: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Path | None:
    """The split's embeddings cache file (:func:`embedding_cache`), embedded chunk by chunk into it when
    missing, without holding the split's embeddings in memory; None when the file cannot be written
    (a read-only run folder: :func:`embed_split` then embeds in memory). Under torchrun, the shards of
    every rank joined by rank 0; every rank must call it."""
    key = None if random_init or str(checkpoint) != "last" else key
    cache = embedding_cache(run, split, feature, checkpoint, random_init, key)
    if distributed.world_size() > 1:
        return _cache_sharded(run, split, feature, checkpoint, device, random_init, progress, key, chunk_rows, cache)
    if cache.is_file() and cached_shape(cache) is not None:
        return cache
    encoder, images, dev, size = _setup(run, split, checkpoint, device, random_init, key)
    try:
        writer = _NpzWriter(cache, images)
    except OSError:
        return None
    try:
        for part in _chunks(encoder, images, 0, len(images), feature, size, dev, chunk_rows, progress):
            writer.add(part)
        writer.commit()
    except OSError:  # full, or the folder went away: the caller embeds in memory
        return None
    finally:
        writer.abort()
    return cache


def _setup(
    run: RunDir, split: str, checkpoint: str | Path, device: str, random_init: bool, key: str | None
) -> tuple[Encoder, data.ImageSet, torch.device, int | None]:
    """(encoder, the split's images, device, crop size) for embedding a split."""
    cfg = run.config()
    images = data.split_of(cfg.data, split)
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None and distributed.world_size() > 1:
        dev = torch.device("cuda", distributed.local_rank())  # a GPU per rank, as training has
    if key is not None:
        encoder = pinned_encoder(run, key, dev)
    else:
        encoder, _ = load_encoder(run, checkpoint, dev, random_init=random_init)
    return encoder, images, dev, cfg.views.crop_size


def _chunks(
    encoder: Encoder,
    images: data.ImageSet,
    lo: int,
    hi: int,
    feature: str,
    size: int | None,
    device: torch.device,
    chunk_rows: int,
    progress: Progress | None,
) -> Iterator[np.ndarray]:
    """(rows, F) float32 embeddings of rows lo..hi, ``chunk_rows`` at a time (:func:`extract`)."""
    step = max(1, int(chunk_rows))
    for start in range(lo, hi, step):
        stop = min(hi, start + step)

        def tick(done: int, total: int, start: int = start) -> None:
            if progress:
                progress(start - lo + done, hi - lo)

        emb = extract(encoder, images.images[start:stop], feature=feature, size=size, device=device, progress=tick)
        yield emb.numpy().astype(np.float32, copy=False)


class _NpzWriter:
    """:meth:`Embeddings.save_npz`'s file, its embeddings streamed in chunk by chunk: an uncompressed zip
    written under a temp name and renamed into place by :meth:`commit` once every row is in."""

    def __init__(self, path: Path, images: data.ImageSet):
        self.path = path
        self.n = len(images)
        self.rows = 0
        self.member: Any = None
        self.zip: zipfile.ZipFile | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)  # what writers killed mid-file left (their pid is in the name)
        self.tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        try:
            self._start(images)
        except BaseException:
            self.abort()
            raise

    def _start(self, images: data.ImageSet) -> None:
        self.zip = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        small = {
            "labels": images.labels.numpy().astype(np.int64),
            "indices": np.arange(self.n, dtype=np.int64),
            "classes": np.array(list(images.classes), dtype=str),
        }
        for name, array in small.items():
            with self.zip.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)

    def add(self, chunk: np.ndarray) -> None:
        """Append rows (k, F) float32."""
        if self.member is None:  # the header needs F, which the first chunk tells
            assert self.zip is not None
            self.member = self.zip.open("embeddings.npy", "w", force_zip64=True)
            header = {"descr": "<f4", "fortran_order": False, "shape": (self.n, int(chunk.shape[1]))}
            np.lib.format.write_array_header_1_0(self.member, header)
        self.member.write(np.ascontiguousarray(chunk, dtype="<f4").data)
        self.rows += len(chunk)

    def commit(self) -> None:
        """Close the file and rename it into place; a RuntimeError if rows are missing (a bug, not a user's)."""
        if self.member is None:
            self.add(np.zeros((0, 0), np.float32))
        if self.rows != self.n:
            raise RuntimeError(f"{self.rows} rows written of {self.n}")
        self.member.close()
        assert self.zip is not None
        self.zip.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the temp file unless :meth:`commit` renamed it (safe to call after commit)."""
        with contextlib.suppress(Exception):  # closing a zip whose disk is full fails again
            if self.member is not None:
                self.member.close()
            if self.zip is not None:
                self.zip.close()
        self.tmp.unlink(missing_ok=True)


def cached_shape(path: Path) -> tuple[int, int] | None:
    """(N, F) of a cache file's embeddings, read from its header; None when it is not a whole cache file."""
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("embeddings.npy")
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
                header = f.tell()
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if len(shape) != 2 or info.file_size != header + shape[0] * shape[1] * dtype.itemsize:
        return None
    return int(shape[0]), int(shape[1])


# ---- torchrun: each rank embeds a contiguous shard, rank 0 joins them ------------------------------------


def shard_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """Rows lo..hi of rank ``rank``'s contiguous shard of ``n`` rows: the first ``n % world`` shards one longer."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def _shard_path(cache: Path, rank: int, world: int, token: str, part: bool = False) -> Path:
    # temp names with rank 0's pid: remove_stale_temps clears what a killed launch left
    return cache.with_name(f".{cache.stem}.shard{rank}of{world}{'.part' if part else ''}.{token}.tmp.npy")


def _cache_sharded(
    run: RunDir,
    split: str,
    feature: str,
    checkpoint: str | Path,
    device: str,
    random_init: bool,
    progress: Progress | None,
    key: str | None,
    chunk_rows: int,
    cache: Path,
) -> Path:
    world, rank = distributed.world_size(), distributed.rank()
    token = distributed.broadcast(str(os.getpid()))
    if distributed.broadcast(cache.is_file() and cached_shape(cache) is not None if rank == 0 else None):
        return cache
    error: str | None = None
    try:
        encoder, images, dev, size = _setup(run, split, checkpoint, device, random_init, key)
        lo, hi = shard_bounds(len(images), world, rank)
        _write_shard(encoder, images, lo, hi, feature, size, dev, chunk_rows, progress, cache, rank, world, token)
    except Exception as e:  # told to every rank, so none waits for a shard that will not come
        if isinstance(e, OSError):
            error = f"{e.strerror or e} ({e.filename or cache.parent})"
        else:
            error = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
    errors = distributed.all_objects(error)
    shards = [_shard_path(cache, r, world, token) for r in range(world)]
    failed = [(r, e) for r, e in enumerate(errors) if e]
    if not failed and rank == 0:
        try:
            _join_shards(shards, images, cache, chunk_rows)
        except (UserError, OSError) as e:
            failed = [(0, str(e))]
    if rank == 0:
        for path in [*shards, *(_shard_path(cache, r, world, token, part=True) for r in range(world))]:
            path.unlink(missing_ok=True)
    failed = distributed.broadcast(failed)
    if failed:
        r, message = failed[0]
        raise UserError(f"rank {r} could not embed its shard of the {split} split: {message}")
    return cache


def _write_shard(
    encoder: Encoder,
    images: data.ImageSet,
    lo: int,
    hi: int,
    feature: str,
    size: int | None,
    dev: torch.device,
    chunk_rows: int,
    progress: Progress | None,
    cache: Path,
    rank: int,
    world: int,
    token: str,
) -> None:
    """Rows lo..hi into this rank's shard file (a .npy written through a memory map, renamed when whole)."""
    part, done = _shard_path(cache, rank, world, token, part=True), _shard_path(cache, rank, world, token)
    cache.parent.mkdir(parents=True, exist_ok=True)
    out: np.memmap | None = None
    at = 0
    for chunk in _chunks(encoder, images, lo, hi, feature, size, dev, chunk_rows, progress):
        if out is None:
            out = np.lib.format.open_memmap(part, mode="w+", dtype=np.float32, shape=(hi - lo, chunk.shape[1]))
        out[at : at + len(chunk)] = chunk
        at += len(chunk)
    if out is None:  # an empty shard (fewer rows than ranks)
        np.save(part, np.zeros((0, 0), np.float32))
    else:
        out.flush()
        del out
    os.replace(part, done)


def _join_shards(shards: list[Path], images: data.ImageSet, cache: Path, chunk_rows: int) -> None:
    """The ranks' shard files, in rank order, into the one cache file, ``chunk_rows`` rows at a time."""
    writer = _NpzWriter(cache, images)
    try:
        world = len(shards)
        for r, path in enumerate(shards):
            lo, hi = shard_bounds(len(images), world, r)
            try:
                shard = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise UserError(
                    f"rank {r}'s shard {path} is missing or half written ({e}): every rank must see the run "
                    "folder (a shared file system), and no rank may stop early; run again"
                ) from None
            if shard.ndim != 2 or len(shard) != hi - lo:
                raise UserError(f"rank {r}'s shard {path} holds {shard.shape}, not {hi - lo} rows: run again")
            for start in range(0, len(shard), max(1, chunk_rows)):
                writer.add(np.asarray(shard[start : start + chunk_rows]))
            del shard
        writer.commit()
    finally:
        writer.abort()
