"""2-D / 3-D projections of embeddings for plots: UMAP, t-SNE and PCA, cached on disk.

:func:`trajectory` projects a sequence of frames (the probe's embeddings epoch by epoch) so that
points move smoothly: UMAP and t-SNE start each frame from the previous frame's coordinates, and
every frame is rotated onto the previous one (:func:`align`, orthogonal Procrustes).

At a million rows (``bench/explorer_backend.py``, BENCHMARKS.md issue 19): UMAP is fed the split's k-NN
graph (``knn``, from :class:`~simclr_core.explorer.neighbours.NeighbourIndex`) instead of searching
neighbours again, and :func:`first_map` (seconds: UMAP of a sample, the rest placed by the graph) gives the
page a picture while UMAP runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
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
FIRST_CHUNK = 65_536  # rows per block in first_map: its memory is the output plus one normalised block
FIRST_SAMPLE = 20_000  # above this many rows, a first map is UMAP of this many (~10 s here) and the rest placed
Knn = tuple[np.ndarray, np.ndarray]  # (rows (N, K), cosine sims (N, K)): each row's nearest *other* rows


def _check(n: int, method: str, dims: int) -> None:
    if method not in PROJECTIONS:
        raise UserError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    if dims not in (2, 3):
        raise UserError(f"projections are 2-D or 3-D, not {dims}-D")
    if n < dims + 2:
        raise UserError(f"need at least {dims + 2} points to project, got {n}")


def project(
    x: np.ndarray,
    method: str = "umap",
    dims: int = 2,
    seed: int = 0,
    init: np.ndarray | None = None,
    knn: Knn | None = None,
    **params: Any,
) -> np.ndarray:
    """Project (N, F) embeddings to (N, dims) float32 coordinates.

    Embeddings are L2-normalised first, so every method sees the cosine geometry the loss uses.

    Args:
        method: "umap" (n_neighbors, min_dist), "tsne" (perplexity) or "pca".
        dims: 2 or 3.
        init: (N, dims) starting coordinates for UMAP and t-SNE (e.g. the previous epoch's), which
            then need fewer iterations; ignored by PCA.
        knn: the k-NN graph of exactly these rows (:meth:`NeighbourIndex.graph` or :func:`graph_of_rows`),
            used by UMAP in place of its own neighbour search when it holds >= n_neighbors - 1 neighbours;
            UMAP then starts from PCA (its spectral start costs minutes at 1M rows). Ignored by t-SNE and PCA.
        params: the method's parameters; missing ones take :data:`DEFAULTS`.
    """
    n = len(x)
    _check(n, method, dims)
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
        extra: dict[str, Any] = (
            {} if init is None else {"init": _umap_init(init), "n_epochs": 100, "learning_rate": 0.1}
        )
        pre = _umap_knn(knn, n, n_neighbors)
        if pre is not None:
            extra["precomputed_knn"] = pre
            extra.setdefault("init", "pca")
        with warnings.catch_warnings():
            # without an NNDescent index UMAP warns that .transform is unavailable; nothing here calls it
            warnings.filterwarnings("ignore", message=".*knn_search_index.*")
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


def _umap_knn(knn: Knn | None, n: int, n_neighbors: int) -> tuple[np.ndarray, np.ndarray, None] | None:
    """UMAP's ``precomputed_knn`` from a graph without self-loops: itself first at distance 0, then the
    graph's nearest n_neighbors - 1, as Euclidean distances of unit rows (sqrt(2 - 2 cos)). None when the
    graph does not fit these rows or is too shallow."""
    if knn is None:
        return None
    rows, sims = np.asarray(knn[0]), np.asarray(knn[1])
    if rows.shape != sims.shape or rows.ndim != 2 or len(rows) != n or rows.shape[1] < n_neighbors - 1:
        return None
    m = n_neighbors - 1  # pruned here: umap-learn skips its own pruning below 4,096 rows
    idx = np.concatenate([np.arange(n, dtype=np.int64)[:, None], rows[:, :m].astype(np.int64)], axis=1)
    dist = np.concatenate(
        [np.zeros((n, 1), np.float32), np.sqrt(np.clip(2 - 2 * sims[:, :m].astype(np.float32), 0, None))], axis=1
    )
    return idx, dist, None


def local_graph(rows: np.ndarray, graph_rows: np.ndarray, graph_sims: np.ndarray) -> Knn:
    """The split graph's rows for ``rows`` (a subset of the split), renumbered to positions in ``rows``; -1
    where a neighbour is not among them."""
    rows = np.asarray(rows, np.int64)
    if len(rows) == len(graph_rows) and np.array_equal(rows, np.arange(len(graph_rows))):
        return graph_rows, graph_sims
    where = np.full(len(graph_rows), -1, np.int64)
    where[rows] = np.arange(len(rows))
    return where[graph_rows[rows]], graph_sims[rows]


def graph_of_rows(rows: np.ndarray, graph_rows: np.ndarray, graph_sims: np.ndarray, k: int) -> Knn | None:
    """The k-NN graph among a subset of rows, cut from the whole split's graph; None when it is too thin.

    Each kept row's neighbours are its split neighbours that are also in ``rows``, renumbered to
    positions in ``rows``; None unless every row keeps at least ``k``. With all rows this is the graph
    itself; with a sample of a fraction f, a 50-NN graph keeps ~50 f, so samples below ~half the split
    let UMAP search its own neighbours.
    """
    if k < 1 or graph_rows.shape[1] < k:
        return None
    local, sims = local_graph(rows, graph_rows, graph_sims)
    keep = local >= 0
    if keep.sum(1).min(initial=k) < k:
        return None
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # the first k kept, in similarity order
    return np.take_along_axis(local, order, 1), np.take_along_axis(sims, order, 1)


def first_map(x: np.ndarray, dims: int = 2, knn: Knn | None = None, seed: int = 0) -> np.ndarray:
    """A quick (N, dims) map to show while the final projection runs.

    Above :data:`FIRST_SAMPLE` rows, given their k-NN graph ``knn`` (rows may be -1: a neighbour outside
    these rows): UMAP of :data:`FIRST_SAMPLE` rows drawn at random, every other row then placed where its
    neighbours are (:func:`place`). On CIFAR-10's 60,000 real embeddings 0.033 of a point's 10 nearest stay
    near it on the map, against PCA's 0.017 and the final UMAP's 0.055 (31 s); ~10 s whatever the size
    (BENCHMARKS.md, issue 19). Otherwise, PCA of the L2-normalised rows (:func:`pca_map`).
    """
    if knn is None or len(x) <= FIRST_SAMPLE:
        return pca_map(x, dims)
    sample = np.sort(np.random.default_rng(seed).choice(len(x), FIRST_SAMPLE, replace=False))
    return place(project(np.asarray(x[sample], np.float32), "umap", dims, seed=seed), sample, len(x), knn)


def place(coords: np.ndarray, at: np.ndarray, n: int, knn: Knn, passes: int = 8) -> np.ndarray:
    """(n, dims) positions from ``coords`` of rows ``at``: each other row goes to the similarity-weighted mean
    of its neighbours already placed, in passes (a row none of whose neighbours is placed waits for the next);
    rows still unplaced after ``passes`` go to the middle. Blocked, so memory is the output and one block."""
    rows, sims = knn
    out = np.full((n, coords.shape[1]), np.nan, np.float32)
    out[at] = coords
    for _ in range(passes):
        todo = np.flatnonzero(np.isnan(out[:, 0]))
        if not len(todo):
            break
        for s in range(0, len(todo), FIRST_CHUNK):
            t = todo[s : s + FIRST_CHUNK]
            nb = out[np.maximum(rows[t], 0)]  # (m, K, dims); -1 (outside) masked next
            w = np.where((rows[t] >= 0) & ~np.isnan(nb[..., 0]), np.maximum(sims[t], 0) + 1e-6, 0).astype(np.float32)
            placed = w.sum(1) > 0
            pos = np.einsum("mk,mkd->md", w, np.nan_to_num(nb)) / np.maximum(w.sum(1), 1e-12)[:, None]
            out[t[placed]] = pos[placed]
    left = np.isnan(out[:, 0])
    if left.any():
        out[left] = out[~left].mean(0)
    return out


def pca_map(x: np.ndarray, dims: int = 2) -> np.ndarray:
    """PCA of the L2-normalised rows, scaled to UMAP's range: a first map of small splits, and without a graph.

    Blocked: the covariance is summed over blocks of :data:`FIRST_CHUNK` rows, so memory is the output
    and one block; 32 CPU-s at 1M x 512 on the 2-core dev CPU (UMAP: minutes at 100k). It shows the broad
    layout only: few of a point's 10 nearest neighbours stay near it on the map (0.2% at 100k clustered x 512,
    against UMAP's 4.2%; BENCHMARKS.md, issue 19).
    """
    x = np.asarray(x)
    _check(len(x), "pca", dims)
    d = x.shape[1]
    total, cov = np.zeros(d, np.float64), np.zeros((d, d), np.float64)
    for s in range(0, len(x), FIRST_CHUNK):
        b = _unit_block(x[s : s + FIRST_CHUNK])
        total += b.sum(0)
        cov += b.T.astype(np.float64) @ b
    mean = total / len(x)
    cov = cov / len(x) - np.outer(mean, mean)
    _, vecs = np.linalg.eigh(cov)
    axes = vecs[:, ::-1][:, :dims].astype(np.float32)  # largest variance first
    axes *= np.where(axes.sum(0) < 0, -1, 1).astype(np.float32)  # a fixed sign, so reruns agree
    out = np.empty((len(x), dims), np.float32)
    for s in range(0, len(x), FIRST_CHUNK):
        out[s : s + FIRST_CHUNK] = (_unit_block(x[s : s + FIRST_CHUNK]) - mean.astype(np.float32)) @ axes
    return _umap_init(out)


def _unit_block(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float32)
    return b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)


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
    cache_dir: str | Path,
    key: str,
    method: str = "umap",
    dims: int = 2,
    seed: int = 0,
    *,
    graph: bool = False,
    **params: Any,
) -> Path:
    """The file :func:`cached_project` reads or writes for these arguments (exists once computed).

    ``graph``: the projection was fed a k-NN graph (``knn``); a different picture, so a different file.
    """
    p = {**DEFAULTS.get(method, {}), **params}
    parts: list[Any] = [key, method, dims, seed, sorted(p.items())] + (["graph"] if graph else [])
    tag = hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"proj-{method}-{dims}d-{tag}.npy"


def cached_project(
    x: np.ndarray,
    cache_dir: str | Path,
    key: str,
    method: str = "umap",
    dims: int = 2,
    seed: int = 0,
    *,
    knn: Knn | None = None,
    **params: Any,
) -> np.ndarray:
    """:func:`project`, computed once per (embeddings key, method, dims, params) and then read from disk.

    ``key`` must name the rows of ``x`` (e.g. :attr:`Embeddings.key` plus any subsampling): the
    file is found by key alone, so different rows under one key would read a wrong projection.
    ``knn``: as :func:`project`'s (the file is :func:`cache_path` with ``graph=True``).
    """
    p = {**DEFAULTS.get(method, {}), **params}
    path = cache_path(cache_dir, key, method, dims, seed, graph=knn is not None, **p)
    if path.is_file():
        try:
            out = np.load(path)
        except (OSError, ValueError):  # a damaged file is only a cache: compute afresh
            out = None
        if out is not None and out.shape == (len(x), dims):
            return out
    out = project(x, method, dims, seed, knn=knn, **p)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")  # per process: two app sessions may race
    np.save(tmp, out)
    tmp.replace(path)
    return out
