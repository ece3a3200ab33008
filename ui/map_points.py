"""The Embeddings page's map as plain data: what a map job's result holds once read, which points the
highlight keeps bright, each point's colour and alpha with the legend's entries, and the points table
that both views (the map of a split, the probe frames over training) hand to the deck.gl or Plotly
chart. Nothing here calls streamlit, so the colouring is unit-tested on plain arrays
(tests/ui/test_colouring.py); the palettes and colour scales themselves are ui.mapview's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from simclr_core.data import datasets as data
from simclr_core.embeddings import Embeddings
from simclr_core.explorer.tags import Tag
from ui import mapview

BRIGHT, DIMMED = 220, 40  # alpha of highlighted points and of the others (dimmed, not hidden: they give the context)


@dataclass(frozen=True)
class MapData:
    """A map job's result as read for one run of the page (ui.explorer_map.load_map)."""

    result: dict[str, Any]  # the job's files: embeddings, graph, coords, thumbs
    wait: float | None  # seconds the page waited for the job, None when it was ready
    emb: Embeddings  # every image of the split
    images: data.ImageSet
    rows: np.ndarray  # the plotted split rows, sorted
    coords: np.ndarray  # (len(rows), dims) projection of the plotted rows
    names: list[str]  # the class name of each split row
    tags: dict[str, Tag]  # the split's tags, oldest first

    @property
    def n(self) -> int:
        """Images in the split (plotted or not)."""
        return len(self.emb.labels)

    @property
    def labelled(self) -> bool:
        return bool(self.emb.classes) and bool((self.emb.labels >= 0).any())

    @property
    def tag_rows(self) -> dict[str, list[int]]:
        return {name: tag.rows for name, tag in self.tags.items()}


@dataclass(frozen=True)
class Legend:
    """The key to a map's colours: named swatches (``ids`` index mapview's palette, -1 grey), a viridis
    bar ``(label, lo, hi)``, or the kNN right / wrong pair with the share wrong. All None: no legend."""

    names: tuple[str, ...] | None = None
    ids: tuple[int, ...] | None = None
    bar: tuple[str, float, float] | None = None
    wrong: float | None = None


@dataclass(frozen=True)
class Colouring:
    """Each plotted point's colour and alpha, and the legend that explains them."""

    rgb: np.ndarray  # (N, 3) uint8; points outside the highlight are mapview.DIM
    alpha: np.ndarray  # (N,) uint8: BRIGHT, or DIMMED outside the highlight
    legend: Legend


def highlighted(
    labels: np.ndarray,
    classes: list[str],
    chosen_classes: Sequence[str],
    tags: Mapping[str, Sequence[int]],
    chosen_tags: Sequence[str],
) -> np.ndarray:
    """(N,) bool over the split: in one of ``chosen_classes`` (all when none) and one of ``chosen_tags``."""
    keep = np.ones(len(labels), bool)
    if chosen_classes:
        keep &= np.isin(labels, [classes.index(c) for c in chosen_classes])
    if chosen_tags:
        keep &= np.isin(np.arange(len(labels)), [r for t in chosen_tags for r in tags[t]])
    return keep


def highlighted_rows(keep: np.ndarray) -> list[int]:
    """The rows a highlight keeps, or [] when it keeps all (nothing is highlighted)."""
    return [] if keep.all() else np.flatnonzero(keep).tolist()


def tag_ids(tags: Mapping[str, Sequence[int]], rows: np.ndarray) -> np.ndarray:
    """Each plotted row's tag, as an index into ``tags`` (the newest tag holding it); -1 for none."""
    ids = np.full(len(rows), -1, np.int64)
    for i, tag_rows in enumerate(tags.values()):
        ids[np.isin(rows, tag_rows)] = i
    return ids


def legend_of(
    mode: str,
    classes: list[str],
    labels: np.ndarray,
    s: Mapping[str, np.ndarray],
    rows: np.ndarray,
    clusters: np.ndarray | None = None,
    tags: Sequence[str] | None = None,
) -> Legend:
    """The legend of :func:`mapview.colours` for the same arguments (``tags``: the tag names, in id order)."""
    if mode in ("class", "pred"):
        ids = sorted(set((labels if mode == "class" else s["pred"][rows]).tolist()))
        return Legend(tuple(classes[i] if 0 <= i < len(classes) else "unlabelled" for i in ids), tuple(ids))
    if mode == "correct":
        return Legend(wrong=float(np.mean(s["pred"][rows] != labels)) if len(rows) else 0.0)
    if mode == "cluster" and clusters is not None:
        ids = sorted(set(clusters.tolist()))
        return Legend(tuple(f"cluster {i}" for i in ids), tuple(ids))
    if mode == "tag" and tags is not None:
        return Legend((*tags, "no tag"), (*range(len(tags)), -1))
    if mode == "confidence":
        return Legend(bar=("share of the kNN vote", 0.0, 1.0))
    if mode == "label_error":
        return Legend(bar=("other class's vote minus own label's", -1.0, 1.0))
    if mode == "outlier":
        return Legend(bar=("cosine distance to the k-th neighbour", *mapview.outlier_range(s["outlier"][rows])))
    return Legend()


def colour_points(
    mode: str,
    labels: np.ndarray,
    classes: list[str],
    s: Mapping[str, np.ndarray],
    rows: np.ndarray,
    clusters: np.ndarray | None = None,
    tags: Mapping[str, Sequence[int]] | None = None,
    shown: np.ndarray | None = None,
) -> Colouring:
    """Colour, alpha and legend of the plotted points for a colour ``mode`` (ui.explorer_map.COLOURS).

    ``labels`` are the plotted points' labels, ``s`` the split's scores (indexed by split row), ``rows``
    the plotted split rows, ``clusters`` a cluster id per plotted point, ``tags`` each tag's split rows,
    ``shown`` which plotted points the highlight keeps bright (None: all).
    """
    ids = tag_ids(tags, rows) if tags is not None else None
    rgb = mapview.colours(mode, labels, dict(s), rows, clusters, ids)
    shown = np.ones(len(rows), bool) if shown is None else np.asarray(shown, bool)
    rgb[~shown] = mapview.DIM
    alpha = np.where(shown, BRIGHT, DIMMED).astype(np.uint8)
    legend = legend_of(mode, classes, labels, s, rows, clusters, list(tags) if tags is not None else None)
    return Colouring(rgb, alpha, legend)


def points_frame(
    coords: np.ndarray,
    rgb: np.ndarray,
    rows: np.ndarray | Sequence[int],
    labels: Sequence[str],
    alpha: np.ndarray | None = None,
    dims: int = 2,
) -> pd.DataFrame:
    """The points a map draws: x, y, colour r g b (and alpha a), split row and class name, then z in 3-D."""
    columns: dict[str, Any] = {"x": coords[:, 0], "y": coords[:, 1], "r": rgb[:, 0], "g": rgb[:, 1], "b": rgb[:, 2]}
    if alpha is not None:
        columns["a"] = alpha
    df = pd.DataFrame({**columns, "row": rows, "label": list(labels)})
    if dims == 3:
        df["z"] = coords[:, 2]
    return df


def on_map(rows: np.ndarray, coords: np.ndarray, wanted: Sequence[int], dims: int) -> pd.DataFrame:
    """Coordinates of those of ``wanted`` that are plotted (``rows`` is sorted): the rings of a picked image."""
    wanted_arr = np.asarray(wanted, np.int64)
    pos = np.searchsorted(rows, wanted_arr)
    pos = pos[rows[np.minimum(pos, len(rows) - 1)] == wanted_arr] if len(rows) else pos[:0]  # k lookups, not a pass
    return pd.DataFrame({c: coords[pos, i] for i, c in enumerate(["x", "y", "z"][:dims])})
