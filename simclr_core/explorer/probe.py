"""The probe: a fixed subset of images embedded at every monitor epoch, to watch the space form.

A run with the probe on writes ``checkpoints/<run>/probe/``:

- ``subset.json``: the split and the row numbers of the probe images (chosen once, kept on resume);
- ``epoch-0005.npy``: the backbone embeddings h of those images after epoch 5, float16 (N, F).
  Each frame appears atomically (temp file + rename); a resumed run rewrites the frames of the
  epochs it redoes and drops those past its checkpoint, so no epoch is ever there twice.

:func:`record` also returns the label-free health of the frame (RankMe, α-ReQ, LiDAR, alignment,
uniformity, the k-means pseudo-label kNN score, for h and z; :mod:`simclr_core.evaluation.health`),
which training appends to ``metrics.jsonl``. :func:`read_frames`
returns the complete frames only: a file that does not hold a whole (N, F) array (a killed
writer, a full disk) is left out.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simclr_core.embeddings import batch_for, extract_both
from simclr_core.evaluation.health import health
from simclr_core.files import write_error
from simclr_core.models import Encoder
from simclr_core.views import two_views

__all__ = ["Probe", "choose", "drop_frames_after", "frame_epochs", "frame_path", "read_frames", "read_subset", "record"]

# The probe's own view generator: its views are the same at every epoch, and training's RNG is untouched.
PROBE_SEED = 12345
# Views per probe image for LiDAR (the first two also give alignment). Each view past the second is one more
# forward pass of every probe image; 4 keeps the whole probe near 1% of a CIFAR epoch (CHANGELOG, issue 20).
LIDAR_VIEWS = 4
_FRAME = re.compile(r"^epoch-(\d{4,})\.npy$")


@dataclass
class Probe:
    """The probe images of a run: ``rows`` of ``split``, with their labels (-1: unlabelled)."""

    split: str
    rows: np.ndarray  # (N,) int64 row numbers in the split, sorted
    labels: np.ndarray  # (N,) int64
    classes: list[str]


def choose(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted row numbers of ``size`` images, stratified by label (each class in proportion, rounded).

    Unlabelled splits (all -1) get a plain random subset; ``size`` >= N gives every row.
    """
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    if len(classes) == 1:
        return np.sort(rng.choice(n, size, replace=False)).astype(np.int64)
    # Largest-remainder apportionment: every class gets its share of `size`, the shares sum to `size`.
    counts = np.array([(labels == c).sum() for c in classes])
    quota = counts * size / n
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: size - take.sum()]] += 1
    rows = [rng.choice(np.flatnonzero(labels == c), t, replace=False) for c, t in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(rows)).astype(np.int64)


def probe_dir(run_path: Path) -> Path:
    return Path(run_path) / "probe"


def frame_path(run_path: Path, epoch: int) -> Path:
    return probe_dir(run_path) / f"epoch-{epoch:04d}.npy"


def write_subset(run_path: Path, probe: Probe) -> None:
    """Record the probe's split and rows (atomically); read back by :func:`read_subset`."""
    d = probe_dir(run_path)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".subset.json.{os.getpid()}.tmp"
    tmp.write_text(
        json.dumps(
            {
                "split": probe.split,
                "rows": probe.rows.tolist(),
                "labels": probe.labels.tolist(),
                "classes": probe.classes,
            }
        )
    )
    os.replace(tmp, d / "subset.json")


def read_subset(run_path: Path) -> Probe | None:
    """The run's probe, or None when it recorded none (or the file is damaged)."""
    try:
        d = json.loads((probe_dir(run_path) / "subset.json").read_text())
        rows, labels = np.asarray(d["rows"], np.int64), np.asarray(d["labels"], np.int64)
        split, classes = str(d["split"]), [str(c) for c in d["classes"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if rows.ndim != 1 or rows.shape != labels.shape:
        return None
    return Probe(split, rows, labels, classes)


@torch.no_grad()
def record(
    encoder: Encoder,
    images: torch.Tensor,
    view_kwargs: dict,
    run_path: Path,
    epoch: int,
    device: torch.device,
    batch_size: int = 512,
    views: int = LIDAR_VIEWS,
) -> dict[str, float | str]:
    """Embed the probe images after ``epoch``, write the frame, and return its health metrics.

    Args:
        images: (N, 3, H, W) uint8 probe images (any device).
        view_kwargs: the run's view settings; two views of each image measure alignment, ``views``
            (>= 2) of them LiDAR.

    Cost: one forward pass of the images and one of each view ((1 + views) N images), no gradients,
    and the signals' linear algebra on the CPU.
    """
    if views < 2:
        raise ValueError(f"the probe needs at least 2 views per image, got {views}")
    size = view_kwargs["size"]
    batch_size = batch_for(max(size, images.shape[-1]), batch_size)  # the views of a batch are made at once
    h, z = extract_both(encoder, images, size=size, device=device, batch_size=batch_size)
    g = torch.Generator(device=device).manual_seed(PROBE_SEED)
    # The views past the first two draw from their own generator, so alignment's two views do not
    # depend on how many LiDAR views there are.
    g_more = torch.Generator(device=device).manual_seed(PROBE_SEED + 1)
    hv: list[torch.Tensor] = []  # (b, views, F) per batch
    zv: list[torch.Tensor] = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        hs, zs = [], []
        for pair in range((views + 1) // 2):  # two at a time: a batch's memory as before
            for v in two_views(batch, generator=g if pair == 0 else g_more, **view_kwargs)[: views - 2 * pair]:
                vh, vz = extract_both(encoder, v, device=device, batch_size=batch_size)
                hs.append(vh)
                zs.append(vz)
        hv.append(torch.stack(hs, 1))
        zv.append(torch.stack(zs, 1))
    views_h, views_z = torch.cat(hv), torch.cat(zv)
    path = frame_path(run_path, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    try:
        np.save(tmp, h.numpy().astype(np.float16))
        os.replace(tmp, path)
    except OSError as e:  # NumPy reports a full disk as "N requested and M written", with no errno
        err = write_error(e, tmp)
        raise (err or e) from None
    finally:  # a half frame must not keep the disk full
        tmp.unlink(missing_ok=True)
    return health(h, z, views_z[:, 0], views_z[:, 1], views_h, views_z)


def frame_epochs(run_path: Path) -> list[int]:
    """Epochs that have a frame file, sorted (names only: cheap enough to poll; :func:`read_frames` checks them)."""
    try:
        names = [p.name for p in probe_dir(run_path).iterdir()]
    except OSError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _FRAME.match(n)))


def read_frames(run_path: Path, rows: int | None = None) -> list[tuple[int, np.ndarray]]:
    """(epoch, h (N, F) float32) of every complete frame, by epoch; ``rows`` checks N when given."""
    d = probe_dir(run_path)
    try:
        names = sorted(p.name for p in d.iterdir())
    except OSError:
        return []
    frames: list[tuple[int, np.ndarray]] = []
    for name in names:
        m = _FRAME.match(name)
        if not m:
            continue  # temp files of a writer that was killed, subset.json, projections
        try:
            x = np.load(d / name)
        except (OSError, ValueError, EOFError):
            continue  # half-written or damaged: never shown
        if x.ndim != 2 or (rows is not None and len(x) != rows) or not np.isfinite(x).all():
            continue
        frames.append((int(m.group(1)), x.astype(np.float32)))
    return sorted(frames, key=lambda f: f[0])


def drop_frames_after(run_path: Path, epoch: int) -> None:
    """Remove frames of epochs after ``epoch`` (a resume from that checkpoint records them again) and the
    temp files of a writer that was killed; called as a run (re)starts, when it is the folder's only writer."""
    try:
        entries = list(probe_dir(run_path).iterdir())
    except OSError:
        return
    for p in entries:
        m = _FRAME.match(p.name)
        if (m and int(m.group(1)) > epoch) or (p.name.startswith(".") and ".tmp" in p.name):
            p.unlink(missing_ok=True)


def frame_predictions(frames: list[tuple[int, np.ndarray]], labels: np.ndarray, k: int = 10) -> np.ndarray:
    """(E, N) leave-one-out kNN class of every probe image at each frame, among the other probe images
    (cosine, weighted vote as the explorer's map); -1 where none of its neighbours has a label."""
    from simclr_core.explorer.neighbours import NeighbourIndex
    from simclr_core.explorer.scores import knn_vote

    classes = int(labels.max()) + 1 if len(labels) else 0
    out = np.full((len(frames), len(labels)), -1, np.int64)
    for e, (_, x) in enumerate(frames):
        if len(x) > 1:
            sims, rows = NeighbourIndex(x).graph(k)
            out[e] = knn_vote(sims, rows, labels, classes, k)[0]
    return out
