"""Subsample embeddings for plotting and export them, with their 2-D / 3-D coordinates, as CSV or NPZ bytes."""

from __future__ import annotations

import csv
import hashlib
import io

import numpy as np

from simclr_core.embeddings import Embeddings
from simclr_core.errors import UserError


def subsample(n: int, max_points: int | None, seed: int = 0) -> np.ndarray:
    """Row numbers of a fixed random subset of ``max_points`` out of ``n`` (all rows when None or >= n).

    Sorted, so the subset keeps the split's order; the same (n, max_points, seed) always gives
    the same rows, which keeps cached projections of a subset valid.
    """
    if max_points is not None and max_points < 1:
        raise UserError(f"max points must be at least 1, got {max_points}")
    if max_points is None or max_points >= n:
        return np.arange(n, dtype=np.int64)
    rows = np.random.default_rng(seed).choice(n, size=max_points, replace=False)
    return np.sort(rows).astype(np.int64)


def take(emb: Embeddings, rows: np.ndarray) -> Embeddings:
    """The given rows of ``emb``; the key names the subset so caches keyed by it stay distinct."""
    rows = np.asarray(rows, dtype=np.int64)
    key = emb.key if len(rows) == len(emb.labels) else f"{emb.key}-rows{len(rows)}-{_digest(rows)}"
    return Embeddings(emb.embeddings[rows], emb.labels[rows], emb.indices[rows], list(emb.classes), key)


def _digest(rows: np.ndarray) -> str:
    return hashlib.sha1(rows.tobytes()).hexdigest()[:8]


def class_names(labels: np.ndarray, classes: list[str]) -> list[str]:
    """Class name of each label ("unlabelled" for -1 or a label without a name)."""
    return [classes[i] if 0 <= i < len(classes) else "unlabelled" for i in np.asarray(labels).tolist()]


def _check(emb: Embeddings, coords: np.ndarray) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float32)
    if coords.ndim != 2 or len(coords) != len(emb.labels):
        raise UserError(f"coordinates of shape {coords.shape} do not match {len(emb.labels)} embeddings")
    return coords


def to_csv(emb: Embeddings, coords: np.ndarray, extra: dict[str, list] | None = None) -> bytes:
    """One row per point: index, label, class, the ``extra`` columns (e.g. path, knn_pred), x, y[, z],
    e0 .. e{F-1} (UTF-8 CSV with a header; a file or class name that is not UTF-8 keeps its own bytes,
    so the path still opens the file)."""
    coords = _check(emb, coords)
    extra = extra or {}
    for name, col in extra.items():
        if len(col) != len(emb.labels):
            raise ValueError(f"column {name!r} has {len(col)} values for {len(emb.labels)} points")
    axes = "xyz"[: coords.shape[1]]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["index", "label", "class", *extra, *axes, *(f"e{j}" for j in range(emb.embeddings.shape[1]))])
    names = class_names(emb.labels, emb.classes)
    for i in range(len(emb.labels)):
        w.writerow(
            [
                int(emb.indices[i]),
                int(emb.labels[i]),
                names[i],
                *(col[i] for col in extra.values()),
                *(f"{v:.6g}" for v in coords[i]),
                *(f"{v:.6g}" for v in emb.embeddings[i]),
            ]
        )
    return buf.getvalue().encode("utf-8", "surrogateescape")


def to_npz(emb: Embeddings, coords: np.ndarray) -> bytes:
    """NPZ bytes with arrays ``embeddings``, ``labels``, ``indices``, ``coords`` and ``classes``."""
    coords = _check(emb, coords)
    buf = io.BytesIO()
    np.savez(
        buf,
        embeddings=emb.embeddings,
        labels=emb.labels,
        indices=emb.indices,
        coords=coords,
        classes=np.array(emb.classes, dtype=str),
    )
    return buf.getvalue()
