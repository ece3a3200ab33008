"""What the explorer colours and ranks images by, from a split's own k-NN graph.

Each function takes the graph of :meth:`simclr_core.explorer.neighbours.NeighbourIndex.graph`
(``sims (N, K)`` descending and ``rows (N, K)``, each image's nearest *other* images) and labels
with -1 for "unlabelled". Nothing here sees an image or a model: the same numbers come out of a
notebook, the app and the tests.

- :func:`knn_vote`: the leave-one-out weighted kNN prediction of every image and its confidence
  (the vote of Wu et al. 2018 that the kNN monitor uses, over the image's own split);
- :func:`label_error_score`: how strongly the neighbours agree on a class other than the label
  (the "possible label error" of FiftyOne's mistakenness and Cleanlab, from neighbours only);
- :func:`outlier_score`: cosine distance to the k-th neighbour (a kNN outlier score,
  Ramaswamy et al. 2000), high for images far from everything else;
- :func:`duplicate_score`: similarity to the nearest other image (near-duplicates score ~1);
- :func:`kmeans_clusters`: k-means of the normalised embeddings, for splits without labels.
"""

from __future__ import annotations

import numpy as np

from simclr_core.errors import UserError

__all__ = ["duplicate_score", "kmeans_clusters", "knn_vote", "label_error_score", "outlier_score", "worst"]


def _votes(
    sims: np.ndarray, rows: np.ndarray, labels: np.ndarray, num_classes: int, k: int, temperature: float
) -> np.ndarray:
    """(N, C) vote shares of the first k neighbours, each weighted exp(sim / T); unlabelled ones abstain."""
    if sims.shape != rows.shape or sims.ndim != 2:
        raise ValueError(f"sims and rows must be equal (N, K) arrays, got {sims.shape} and {rows.shape}")
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    k = min(k, sims.shape[1])
    n = len(sims)
    if k == 0 or num_classes < 1:
        return np.zeros((n, max(num_classes, 0)), np.float64)
    nbr = np.asarray(labels, np.int64)[rows[:, :k]]  # (N, k)
    # exp((s - 1) / T): the same shares as exp(s / T), without overflow for small T
    w = np.exp((sims[:, :k].astype(np.float64) - 1.0) / temperature) * (nbr >= 0)
    # one bincount over (row, class) cells: 2.5 CPU-s at 1M x 20 neighbours x 100 classes (np.add.at: 3.2)
    cell = (np.arange(n, dtype=np.int64)[:, None] * num_classes + np.clip(nbr, 0, num_classes - 1)).ravel()
    votes = np.bincount(cell, weights=w.ravel(), minlength=n * num_classes).reshape(n, num_classes)
    total = votes.sum(1, keepdims=True)
    return np.divide(votes, total, out=np.zeros_like(votes), where=total > 0)


def knn_vote(
    sims: np.ndarray, rows: np.ndarray, labels: np.ndarray, num_classes: int, k: int = 20, temperature: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out weighted kNN prediction of every image from its k nearest other images.

    Returns:
        (predicted class (N,) int64, -1 where no neighbour has a label; confidence (N,) in [0, 1],
        the winning class's share of the vote).
    """
    shares = _votes(sims, rows, labels, num_classes, k, temperature)
    if shares.shape[1] == 0:
        return np.full(len(sims), -1, np.int64), np.zeros(len(sims))
    pred = shares.argmax(1)
    conf = shares.max(1)
    pred[conf == 0] = -1
    return pred.astype(np.int64), conf


def label_error_score(
    sims: np.ndarray, rows: np.ndarray, labels: np.ndarray, num_classes: int, k: int = 20, temperature: float = 0.1
) -> np.ndarray:
    """How much the neighbours' vote for the strongest *other* class beats the vote for the image's label.

    In [-1, 1]: 1 when every neighbour agrees on one other class (the label is probably wrong), -1
    when all agree with the label, near 0 when they are split (or when no neighbour has a label, as in a
    split of one image). NaN for unlabelled images.
    """
    labels = np.asarray(labels, np.int64)
    shares = _votes(sims, rows, labels, num_classes, k, temperature)
    out = np.full(len(labels), np.nan)
    have = labels >= 0
    if shares.shape[1] == 0 or not have.any():
        return out
    own = shares[np.arange(len(labels)), np.clip(labels, 0, None)]
    others = shares.copy()
    others[np.arange(len(labels)), np.clip(labels, 0, None)] = -np.inf
    out[have] = (others.max(1) - own)[have] if num_classes > 1 else -own[have]
    return out


def outlier_score(sims: np.ndarray, k: int = 10) -> np.ndarray:
    """Cosine distance (1 - similarity, in [0, 2]) from each image to its k-th nearest other image."""
    if sims.shape[1] == 0:
        raise UserError("outlier scores need at least 2 images")
    k = max(1, min(int(k), sims.shape[1]))
    return 1.0 - sims[:, k - 1].astype(np.float64)


def duplicate_score(sims: np.ndarray) -> np.ndarray:
    """Cosine similarity of each image to its nearest other image: ~1 for (near-)duplicates."""
    if sims.shape[1] == 0:
        raise UserError("duplicate scores need at least 2 images")
    return sims[:, 0].astype(np.float64)


def kmeans_clusters(x: np.ndarray, k: int, seed: int = 0, fit_rows: int = 5_000) -> np.ndarray:
    """Cluster id (N,) of every row: k-means (k-means++ start) of the L2-normalised rows, the loss's geometry.

    The centres are fitted on at most ``fit_rows`` random rows and every row joins its nearest centre:
    0.5 s for 50,000 x 512 on the 2-core dev CPU, where fitting all rows takes 9 s.
    """
    x = np.asarray(x, np.float32)
    if not 1 <= k <= len(x):
        raise UserError(f"k-means needs 1 <= k <= the number of points ({len(x)}), got k = {k}")
    from sklearn.cluster import KMeans

    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= fit_rows else x[rng.choice(len(x), fit_rows, replace=False)]
    centres = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(sample).cluster_centers_.astype(np.float32)
    # nearest centre by squared distance, in blocks: ||x||^2 is the same for every centre
    sq = (centres**2).sum(1)
    return np.concatenate(
        [(b @ centres.T * -2 + sq).argmin(1) for b in np.array_split(x, max(1, len(x) // 8192))]
    ).astype(np.int64)


def worst(
    score: np.ndarray, n: int = 100, keep: np.ndarray | None = None, tiebreak: np.ndarray | None = None
) -> np.ndarray:
    """Row numbers of the ``n`` highest scores, highest first, NaNs and rows outside ``keep`` left out.

    Equal scores are ordered by ``tiebreak``, highest first (e.g. the kNN vote's confidence: an early
    checkpoint gives many images the same label-error score, and split order would show "the first 100
    airplanes"), then by row, so a rerun shows the same grid.
    """
    score = np.asarray(score, np.float64)
    ok = ~np.isnan(score) if keep is None else (~np.isnan(score) & np.asarray(keep, bool))
    rows = np.flatnonzero(ok)
    second = np.zeros(len(rows)) if tiebreak is None else -np.nan_to_num(np.asarray(tiebreak, np.float64)[rows])
    # lexsort: the last key is the primary one; ties in both keep split order (lexsort is stable)
    return rows[np.lexsort((second, -score[rows]))[:n]]
