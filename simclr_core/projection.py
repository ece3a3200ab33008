"""2-D / 3-D projections of embeddings for plots: UMAP, t-SNE and PCA, cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from simclr_core.errors import UserError

METHODS = ("umap", "tsne", "pca")
DEFAULTS: dict[str, dict[str, Any]] = {
    "umap": {"n_neighbors": 15, "min_dist": 0.1},
    "tsne": {"perplexity": 30.0},
    "pca": {},
}


def project(x: np.ndarray, method: str = "umap", dims: int = 2, seed: int = 0, **params: Any) -> np.ndarray:
    """Project (N, F) embeddings to (N, dims) float32 coordinates.

    Embeddings are L2-normalised first, so every method sees the cosine geometry the loss uses.

    Args:
        method: "umap" (n_neighbors, min_dist), "tsne" (perplexity) or "pca".
        dims: 2 or 3.
        params: the method's parameters; missing ones take :data:`DEFAULTS`.
    """
    if method not in METHODS:
        raise UserError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")
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
        out = TSNE(n_components=dims, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    else:
        import umap

        n_neighbors = int(min(p["n_neighbors"], n - 1))
        out = umap.UMAP(n_components=dims, n_neighbors=n_neighbors, min_dist=float(p["min_dist"]),
                        metric="euclidean", random_state=seed, n_jobs=1).fit_transform(x)
    return np.asarray(out, dtype=np.float32)


def cache_path(cache_dir: str | Path, key: str, method: str = "umap", dims: int = 2, seed: int = 0,
               **params: Any) -> Path:
    """The file :func:`cached_project` reads or writes for these arguments (exists once computed)."""
    p = {**DEFAULTS.get(method, {}), **params}
    tag = hashlib.sha1(json.dumps([key, method, dims, seed, sorted(p.items())]).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"proj-{method}-{dims}d-{tag}.npy"


def cached_project(x: np.ndarray, cache_dir: str | Path, key: str, method: str = "umap", dims: int = 2,
                   seed: int = 0, **params: Any) -> np.ndarray:
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
