"""The explorer's computations: what the Embeddings and Search pages show, made once and kept on disk.

Each ``*_products`` function takes a JSON-able spec, computes what is not cached yet, and returns
the paths of its files; :mod:`simclr_core.explorer.jobs` runs them in a worker process, so a page reload
never loses minutes of embedding or UMAP. The ``load_*`` functions read those files back.

- :func:`map_products`: a split's embeddings, the split's k-NN graph (:data:`GRAPH_K` nearest
  other images of every image), the 2-D / 3-D projection of the plotted rows, and thumbnails.
- :func:`trajectory_products`: the probe frames of a run (:mod:`simclr_core.explorer.probe`) projected
  epoch by epoch, each frame started from and aligned to the previous one.
- :func:`embed_products`: one split's embeddings (the Search page's bank).
- :func:`export_products`: the backbone in one of ``simclr-export``'s formats (the Train page's downloads).

:data:`KINDS` names every kind of background job, these, the Evaluate page's
(:func:`simclr_core.evaluation.run.evaluate_job`) and the Train page's run-time estimate
(:func:`simclr_core.training.estimate.estimate_job`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simclr_core.data import datasets as data
from simclr_core.embeddings import Embeddings, cache_embeddings, embed_split, embedding_cache
from simclr_core.errors import UserError
from simclr_core.evaluation.run import evaluate_job
from simclr_core.explorer import probe
from simclr_core.explorer.neighbours import NeighbourIndex
from simclr_core.explorer.projection import (
    DEFAULTS,
    cache_path,
    cached_project,
    first_map,
    graph_of_rows,
    local_graph,
    trajectory,
)
from simclr_core.explorer.specs import EmbedSpec, ExportSpec, MapSpec, TrajectorySpec
from simclr_core.explorer.tables import subsample, take
from simclr_core.explorer.thumbnails import ThumbnailStore
from simclr_core.exporters import export_backbone
from simclr_core.runs.rundir import RunDir
from simclr_core.training.estimate import estimate_job

__all__ = [
    "GRAPH_K",
    "Graph",
    "Progress",
    "embed_products",
    "export_products",
    "first_coords_path",
    "load_first_map",
    "load_graph",
    "load_trajectory",
    "map_products",
    "run_job",
    "trajectory_products",
]

GRAPH_K = 50  # neighbours kept per image: the most the pages' k sliders offer
SEED = 0  # one seed for subsets and projections, so a rerun shows the same picture
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class Graph:
    """Every image's nearest other images in its split: cosine similarities and rows, (N, K) each."""

    sims: np.ndarray
    rows: np.ndarray


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomic np.savez (temp file + rename); a full or read-only disk leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, allow_pickle=False, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _noop(stage: str, done: int, total: int) -> None:
    del stage, done, total


def graph_path(emb_file: Path, k: int = GRAPH_K) -> Path:
    return emb_file.with_name(f"graph-{emb_file.stem}-k{k}.npz")


def load_graph(path: str | Path) -> Graph:
    """The graph :func:`map_products` wrote; ValueError when the file is damaged."""
    with np.load(path, allow_pickle=False) as z:
        g = Graph(z["sims"].astype(np.float32), z["rows"].astype(np.int64))
    if g.sims.shape != g.rows.shape or g.sims.ndim != 2:
        raise ValueError(f"{path} is not a neighbour graph")
    return g


def _graph(emb: Embeddings, path: Path, progress: Progress) -> Path:
    if path.is_file():
        try:
            if len(load_graph(path).sims) == len(emb.embeddings):
                return path
        except (OSError, ValueError, KeyError, EOFError):
            pass  # damaged: build it again
    stage = "finding every image's neighbours"
    progress(f"{stage}: building the index", 0, len(emb.embeddings))
    index = NeighbourIndex(emb.embeddings)
    sims, rows = index.graph(GRAPH_K, lambda d, t: progress(stage, d, t))
    del index  # the bank's normalised copy and faiss's: 4 GB at 1M x 512, not needed by the projection
    _save_npz(path, sims=sims, rows=rows.astype(np.int32))
    return path


def first_coords_path(spec: dict[str, Any]) -> Path:
    """Where :func:`map_products` writes the quick first map of ``spec`` (a :class:`MapSpec`'s dict).

    Computable while the job runs (it names the split's embeddings file, which depends on the checkpoint
    only): the page can show this map as soon as it exists and replace it with ``coords`` when the job ends.
    Read it with :func:`load_first_map`.
    """
    s = MapSpec.from_dict(spec)
    emb_file = embedding_cache(RunDir(s.run), s.split, s.feature, key=s.ckpt)
    return emb_file.with_name(f"first-{emb_file.stem}-{int(s.dims)}d-{_digest([s.max_points or None, SEED])}.npz")


def load_first_map(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(rows (n,) of the split, coords (n, dims)) of :func:`first_coords_path`; ValueError when damaged."""
    with np.load(path, allow_pickle=False) as z:
        rows, coords = z["rows"].astype(np.int64), z["coords"].astype(np.float32)
    if coords.ndim != 2 or len(coords) != len(rows):
        raise ValueError(f"{path} is not a first map")
    return rows, coords


def _first_map(
    path: Path, x: np.ndarray, rows: np.ndarray, dims: int, graph: Callable[[], Graph], progress: Progress
) -> None:
    """A quick map of the plotted rows (:func:`~simclr_core.explorer.projection.first_map`: seconds at 1M, from the
    split's ``graph``, read only when the map is drawn), written before the final projection starts."""
    if path.is_file():
        try:
            if np.array_equal(load_first_map(path)[0], rows):
                return
        except (OSError, ValueError, KeyError, EOFError):
            pass  # damaged: draw it again
    progress("drawing a first map", 0, 1)
    g = graph()
    _save_npz(path, rows=rows, coords=first_map(x, dims, knn=local_graph(rows, g.rows, g.sims), seed=SEED))


def _thumbnails(run: RunDir, split: str, root: str | None, progress: Progress) -> dict[str, Any]:
    """{"thumbs": the set's name, "thumbs_dir": its folder, "atlas": its manifest} of the split's sprite
    atlases (:class:`~simclr_core.explorer.thumbnails.ThumbnailStore`); {} when no thumbnails were asked for."""
    if not root:
        return {}
    # a split never decoded before (embeddings made elsewhere) is decoded here: minutes at 1M, shown as such
    images = data.split_of(run.config().data, split, progress=lambda d, t: progress("reading the images", d, t))
    store = ThumbnailStore(root)
    folder = store.write(images, lambda d, t: progress("writing thumbnails", d, t))
    # thumbs_dir: the set's folder, which the store may evict (least recently used) to keep its cap
    return {"thumbs": folder.name, "thumbs_dir": str(folder), "atlas": store.manifest(folder.name)}


def map_products(spec: dict[str, Any], progress: Progress = _noop) -> dict[str, Any]:
    """Embeddings, graph, projection and thumbnails of one map (``spec``: a :class:`MapSpec`'s dict).

    Progress stages: embedding, the graph (rows done of all), the first map (:func:`first_coords_path`,
    PCA, written before the final projection so the page can show it), the projection, thumbnails.

    Returns:
        {"embeddings", "graph", "coords"} file paths, ``first`` (the first map's file), ``rows`` (the plotted
        rows of the split, as a list), and ``thumbs`` / ``thumbs_ext`` / ``thumbs_dir`` (the set's folder name, file
        extension and path, :class:`~simclr_core.explorer.thumbnails.ThumbnailStore`) when thumbnails were asked for.
    """
    s = MapSpec.from_dict(spec)
    run, split, feature, key = RunDir(s.run), s.split, s.feature, s.ckpt
    emb = embed_split(
        run, split, feature, progress=lambda d, t: progress(f"embedding the {split} split", d, t), key=key
    )
    if len(emb.embeddings) == 0:
        raise UserError(f"the {split} split holds no images")
    emb_file = embedding_cache(run, split, feature, key=key)
    graph = _graph(emb, graph_path(emb_file), progress)
    rows = subsample(len(emb.labels), s.max_points or None, SEED)
    part = emb if len(rows) == len(emb.labels) else take(emb, rows)  # all rows: no 2 GB copy at 1M x 512
    method, dims, params = s.method, int(s.dims), dict(s.params or {})
    # a PCA map takes seconds itself, so it needs no first map; with fewer rows, project() says how many it needs
    split_graph = functools.cache(lambda: load_graph(graph))  # read once, for the first map and UMAP
    if method != "pca" and len(rows) >= dims + 2:
        _first_map(first_coords_path(spec), part.embeddings, rows, dims, split_graph, progress)
    knn = None
    if method == "umap":  # UMAP reads the split's graph instead of searching neighbours again
        g = split_graph()
        n_neighbors = int(min(int({**DEFAULTS["umap"], **params}["n_neighbors"]), max(len(rows) - 1, 1)))
        knn = graph_of_rows(rows, g.rows, g.sims, n_neighbors - 1) if n_neighbors > 1 else None
        del g
    split_graph.cache_clear()  # not held through the projection (600 MB at 1M)
    progress(f"projecting {len(rows):,} points with {method.upper()}", 0, 1)
    cached_project(part.embeddings, run.embeddings_dir, part.key, method, dims, SEED, knn=knn, **params)
    coords = cache_path(run.embeddings_dir, part.key, method, dims, SEED, graph=knn is not None, **params)
    out: dict[str, Any] = {
        "embeddings": str(emb_file),
        "graph": str(graph),
        "coords": str(coords),
        "first": str(first_coords_path(spec)),
        "rows": rows.tolist(),
    }
    out.update(_thumbnails(run, split, s.thumbs, progress))
    return out


def embed_products(spec: dict[str, Any], progress: Progress = _noop) -> dict[str, Any]:
    """One split's embeddings (``spec``: an :class:`EmbedSpec`'s dict)."""
    s = EmbedSpec.from_dict(spec)
    run, split, random_init = RunDir(s.run), s.split, bool(s.random_init)
    key = None if random_init else s.ckpt

    def report(done: int, total: int) -> None:
        progress(f"embedding the {split} split", done, total)

    # written chunk by chunk, never held whole (a million 512-d rows are 2 GB); a read-only run folder
    # cannot hold the file, and the page then embeds in memory (embed_split) as before
    path = cache_embeddings(run, split, s.feature, random_init=random_init, progress=report, key=key)
    if path is None:
        embed_split(run, split, s.feature, random_init=random_init, progress=report, key=key)
    return {"embeddings": str(embedding_cache(run, split, s.feature, random_init=random_init, key=key))}


def trajectory_path(run: RunDir, method: str, dims: int, params: dict[str, Any]) -> Path:
    return probe.probe_dir(run.path) / f"trajectory-{method}-{dims}d-{_digest(params)}.npz"


def load_trajectory(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs (E,), coords (E, N, dims), frame stamps (E,)) of :func:`trajectory_products`' file."""
    with np.load(path, allow_pickle=False) as z:
        return z["epochs"].astype(np.int64), z["coords"].astype(np.float32), z["stamps"].astype(np.int64)


def trajectory_products(spec: dict[str, Any], progress: Progress = _noop) -> dict[str, Any]:
    """The probe's frames, projected and aligned epoch to epoch; only frames not done before are projected.

    ``spec``: a :class:`TrajectorySpec`'s dict.

    Returns:
        {"trajectory": path, "split": the probe's split} and the thumbnails' keys.
    """
    s = TrajectorySpec.from_dict(spec)
    run = RunDir(s.run)
    chosen = probe.read_subset(run.path)
    if chosen is None:
        raise UserError(
            f"run '{run.name}' has recorded no probe: it was trained with --no-probe or "
            "--knn-every 0, or has not reached its first monitor epoch"
        )
    frames = probe.read_frames(run.path, rows=len(chosen.rows))
    if not frames:
        raise UserError(
            f"run '{run.name}' has no complete probe frame yet: the first is written at its first monitor epoch"
        )
    if len(chosen.rows) < 5:
        raise UserError(f"the probe holds {len(chosen.rows)} images; projecting needs at least 5")
    method, dims, params = s.method, int(s.dims), dict(s.params or {})
    path = trajectory_path(run, method, dims, params)
    stamps = [probe.frame_path(run.path, e).stat().st_mtime_ns for e, _ in frames]
    epochs = [e for e, _ in frames]
    done_e: list[int] = []
    done_c: list[np.ndarray] = []
    if path.is_file():
        try:
            old_e, old_c, old_s = load_trajectory(path)
            n_old = len(old_e)
            if (
                list(old_e) == epochs[:n_old]
                and list(old_s) == stamps[:n_old]
                and old_c.shape[1:] == (len(chosen.rows), dims)
            ):
                done_e, done_c = list(old_e), list(old_c)
        except (OSError, ValueError, KeyError, EOFError):
            pass
    todo = frames[len(done_e) :]
    for i, (epoch, x) in enumerate(todo):
        progress(f"projecting probe frame of epoch {epoch}", i, len(todo))
        [coords] = trajectory([x], method, dims, SEED, previous=done_c[-1] if done_c else None, **params)
        done_e.append(epoch)
        done_c.append(coords)
    if todo or not path.is_file():
        _save_npz(
            path, epochs=np.asarray(done_e, np.int64), coords=np.stack(done_c), stamps=np.asarray(stamps, np.int64)
        )
    out: dict[str, Any] = {"trajectory": str(path), "split": chosen.split}
    out.update(_thumbnails(run, chosen.split, s.thumbs, progress))
    return out


def export_products(spec: dict[str, Any], progress: Progress = _noop) -> dict[str, Any]:
    """The run's backbone in one format, as ``simclr-export`` writes it (``spec``: an :class:`ExportSpec`'s dict).

    Returns:
        {"file": the exported file's path}
    """
    s = ExportSpec.from_dict(spec)
    progress(f"writing {s.format}", 0, 1)
    return {"file": str(export_backbone(RunDir(s.run), s.format))}


KINDS: dict[str, Callable[[dict[str, Any], Progress], dict[str, Any]]] = {
    "map": map_products,
    "embed": embed_products,
    "trajectory": trajectory_products,
    "evaluate": evaluate_job,
    "estimate": estimate_job,
    "export": export_products,
}


def run_job(kind: str, spec: dict[str, Any], progress: Progress = _noop) -> dict[str, Any]:
    """Run one job of ``kind`` (a key of :data:`KINDS`) and return its result."""
    if kind not in KINDS:
        raise UserError(f"unknown job kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind](spec, progress)
