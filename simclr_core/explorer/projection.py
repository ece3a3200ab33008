"""2-D / 3-D projections of embeddings for plots: UMAP, t-SNE and PCA, cached on disk.

:func:`trajectory` projects a sequence of frames (the probe's embeddings epoch by epoch) so that
points move smoothly: UMAP and t-SNE start each frame from the previous frame's coordinates, and
every frame is rotated onto the previous one (:func:`align`, orthogonal Procrustes).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from simclr_core.errors import UserError

DEFAULTS: dict[str, dict[str, Any]] = {
    "umap": {"n_neighbors": 15, "min_dist": 0.1},
    "tsne": {"perplexity": 30.0},
    "pca": {},
}
PROJECTIONS = tuple(DEFAULTS)  # the map's methods: umap, tsne, pca


def project(
    x: np.ndarray, method: str = "umap", dims: int = 2, seed: int = 0, init: np.ndarray | None = None, **params: Any
) -> np.ndarray:
    """Project (N, F) embeddings to (N, dims) float32 coordinates.

    Embeddings are L2-normalised first, so every method sees the cosine geometry the loss uses.

    Args:
        method: "umap" (n_neighbors, min_dist), "tsne" (perplexity) or "pca".
        dims: 2 or 3.
        init: (N, dims) starting coordinates for UMAP and t-SNE (e.g. the previous epoch's), which
            then need fewer iterations; ignored by PCA.
        params: the method's parameters; missing ones take :data:`DEFAULTS`.
    """
    if method not in PROJECTIONS:
        raise UserError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    if dims not in (2, 3):
        raise UserError(f"projections are 2-D or 3-D, not {dims}-D")
    n = len(x)
    if n < dims + 2:
        raise UserError(f"need at least {dims + 2} points to project, got {n}")
    p = {**DEFAULTS[method], **params}
    x = np.asarray(x, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if method == "pca":
        from sklearn.decomposition import PCA

        out = PCA(n_components=dims, random_state=seed).fit_transform(x)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(float(p["perplexity"]), (n - 1) / 3)  # sklearn needs perplexity < n
        start = "pca" if init is None else _tsne_init(init)
        out = TSNE(n_components=dims, perplexity=perplexity, init=start, random_state=seed).fit_transform(x)
    else:
        import umap

        n_neighbors = int(min(p["n_neighbors"], n - 1))
        # From its last layout, a gentle refinement (a tenth of the learning rate, half the epochs): at
        # UMAP's own settings the same frame re-projected moved its clusters by half the picture.
        extra = {} if init is None else {"init": _umap_init(init), "n_epochs": 100, "learning_rate": 0.1}
        out = umap.UMAP(
            n_components=dims,
            n_neighbors=n_neighbors,
            min_dist=float(p["min_dist"]),
            metric="euclidean",
            random_state=seed,
            n_jobs=1,
            **extra,
        ).fit_transform(x)
    return np.asarray(out, dtype=np.float32)


def _umap_init(coords: np.ndarray) -> np.ndarray:
    """UMAP's own spectral initialisation spans about [-10, 10]; rescale a previous layout to that."""
    c = np.asarray(coords, np.float64)
    c = c - c.mean(0)
    return (10 * c / max(float(np.abs(c).max()), 1e-12)).astype(np.float32)


def _tsne_init(coords: np.ndarray) -> np.ndarray:
    """scikit-learn's PCA initialisation has standard deviation 1e-4 on the first axis; match it."""
    c = np.asarray(coords, np.float64)
    c = c - c.mean(0)
    return (1e-4 * c / max(float(c[:, 0].std()), 1e-12)).astype(np.float32)


def align(reference: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``x`` rotated (or reflected), scaled and shifted to lie as close as possible to ``reference``.

    Orthogonal Procrustes (Schönemann 1966): with both centred, R = U V^T from the SVD of
    x^T reference, and the scale that minimises the squared distance. Rows correspond.
    """
    ref, y = np.asarray(reference, np.float64), np.asarray(x, np.float64)
    if ref.shape != y.shape or ref.ndim != 2:
        raise ValueError(f"align needs two equal (N, D) arrays, got {ref.shape} and {y.shape}")
    mu_r, mu_y = ref.mean(0), y.mean(0)
    a, b = ref - mu_r, y - mu_y
    u, sv, vt = np.linalg.svd(b.T @ a)
    rot = u @ vt
    norm = float((b**2).sum())
    scale = float(sv.sum()) / norm if norm > 0 else 1.0
    return (scale * b @ rot + mu_r).astype(np.float32)


def trajectory(
    frames: list[np.ndarray],
    method: str = "umap",
    dims: int = 2,
    seed: int = 0,
    previous: np.ndarray | None = None,
    **params: Any,
) -> list[np.ndarray]:
    """Coordinates of each frame (same rows, one frame per epoch), each aligned to the one before.

    Args:
        frames: (N, F) embeddings, in epoch order.
        previous: the coordinates of the frame before ``frames[0]``, when extending a trajectory
            already computed (a run that is still training adds frames).
    """
    out: list[np.ndarray] = []
    last = previous
    for x in frames:
        init = last if method != "pca" else None
        coords = project(x, method, dims, seed, init=init, **params)
        if last is not None:
            coords = align(last, coords)
        out.append(coords)
        last = coords
    return out


def cache_path(
    cache_dir: str | Path, key: str, method: str = "umap", dims: int = 2, seed: int = 0, **params: Any
) -> Path:
    """The file :func:`cached_project` reads or writes for these arguments (exists once computed)."""
    p = {**DEFAULTS.get(method, {}), **params}
    tag = hashlib.sha1(json.dumps([key, method, dims, seed, sorted(p.items())]).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"proj-{method}-{dims}d-{tag}.npy"


def cached_project(
    x: np.ndarray, cache_dir: str | Path, key: str, method: str = "umap", dims: int = 2, seed: int = 0, **params: Any
) -> np.ndarray:
    """:func:`project`, computed once per (embeddings key, method, dims, params) and then read from disk.

    ``key`` must name the rows of ``x`` (e.g. :attr:`Embeddings.key` plus any subsampling): the
    file is found by key alone, so different rows under one key would read a wrong projection.
    """
    p = {**DEFAULTS.get(method, {}), **params}
    path = cache_path(cache_dir, key, method, dims, seed, **p)
    if path.is_file():
        try:
            out = np.load(path)
        except (OSError, ValueError):  # a damaged file is only a cache: compute afresh
            out = None
        if out is not None and out.shape == (len(x), dims):
            return out
    out = project(x, method, dims, seed, **p)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")  # per process: two app sessions may race
    np.save(tmp, out)
    tmp.replace(path)
    return out
