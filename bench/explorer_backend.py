"""The explorer's back end at 100k and 1M rows: neighbour index, k-NN graph, maps and scores (issue 19).

    python bench/explorer_backend.py --points 100000 1000000 [--real /path/emb.npz] [--out results.jsonl]

Each size runs in a fresh process (so its peak RSS is its own) over synthetic clustered 512-d embeddings:
100 centres, each spreading along its own 16-d subspace plus a little isotropic noise, so neighbours are
structured the way a trained encoder's are (isotropic Gaussian clusters in 512-d have near-random
neighbours within a cluster, which no real encoder gives). With ``--real``, an ``.npz`` of ``emb`` and
``labels`` (e.g. CIFAR-10 embedded by a trained run) is tiled up to the size with small noise, and the IVF
index's recall@10 on it is measured too.

Measured, as :func:`backend_times` returns them: IVF index build, the k-NN graph (k = GRAPH_K) build,
recall@10 of the graph and of single queries against exact search (sampled queries), query ms, a PCA map, the
first map (UMAP of a sample, the rest placed by the graph) and the final map (UMAP fed the graph; PaCMAP up
to ``--pacmap-max`` rows), each map's kNN preservation
(share of each sampled point's 10 nearest neighbours in the embedding that are among its 10 nearest on the
map), the scores (kNN vote, label error, outlier, duplicate, k-means) and the process's peak RSS. Prints a
table and, as its last line, a JSON list with one object per size. Numbers are written to ``--out`` after
every stage, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simclr_core.explorer import scores  # noqa: E402
from simclr_core.explorer.compute import GRAPH_K  # noqa: E402
from simclr_core.explorer.neighbours import NeighbourIndex  # noqa: E402
from simclr_core.explorer.projection import DEFAULTS, first_map, pca_map, project  # noqa: E402

SAMPLE = 500  # queries / points sampled for recall and kNN preservation


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def clustered(
    n: int, d: int = 512, centres: int = 100, latent: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) unit rows around ``centres`` centres, each varying along its own ``latent``-d subspace; labels."""
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((centres, d)).astype(np.float32) / np.sqrt(d)
    basis = rng.standard_normal((centres, latent, d)).astype(np.float32) * (1.4 / np.sqrt(latent * d))
    labels = rng.integers(0, centres, n)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 20_000):
        lab = labels[s : s + 20_000]
        z = rng.standard_normal((len(lab), latent)).astype(np.float32)
        x[s : s + 20_000] = (
            cent[lab]
            + np.einsum("nl,nld->nd", z, basis[lab])
            + 0.02 * rng.standard_normal((len(lab), d), dtype=np.float32)
        )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def tile(emb: np.ndarray, labels: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``emb`` repeated up to n rows, each copy moved by noise of norm ~0.05 (unit rows): a bigger 'real' bank."""
    rng = np.random.default_rng(seed)
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    src = np.arange(n) % len(e)
    x = np.empty((n, e.shape[1]), np.float32)
    for s in range(0, n, 50_000):
        part = src[s : s + 50_000]
        x[s : s + 50_000] = e[part] + (0.05 / np.sqrt(e.shape[1])) * rng.standard_normal(
            (len(part), e.shape[1]), dtype=np.float32
        )
    return x, labels[src]


def exact_knn(x: np.ndarray, q_rows: np.ndarray, k: int) -> np.ndarray:
    """Exact k nearest other rows of the sampled rows by brute force in blocks: cosine for embeddings,
    Euclidean for a map (<= 3 columns). Memory: one (100, N) block."""
    is_map = x.shape[1] <= 3
    sq = np.concatenate([np.einsum("ij,ij->i", b, b) for b in np.array_split(x, max(1, len(x) // 65_536))])
    norms = np.sqrt(np.maximum(sq, 1e-24)).astype(np.float32)
    out = []
    for s in range(0, len(q_rows), 100):
        r = q_rows[s : s + 100]
        dot = x[r] @ x.T  # (b, N)
        score = (2 * dot - sq[None, :]).astype(np.float32) if is_map else dot / norms[None, :]  # higher is nearer
        score[np.arange(len(r)), r] = -np.inf
        part = np.argpartition(-score, k, axis=1)[:, :k]
        out.append(np.take_along_axis(part, np.argsort(-np.take_along_axis(score, part, 1), 1), 1))
    return np.concatenate(out)


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of each row's set in ``a`` found in the same row of ``b``."""
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)]))


class Clock:
    """Wall and CPU seconds (all threads) of a stage: on the shared dev box wall time depends on the others'
    load; CPU time is the work, and wall time on a dedicated 2-core machine is CPU time / 2 to CPU time."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, name: str) -> dict[str, float]:
        return {
            f"{name}_s": round(time.perf_counter() - self.wall, 2),
            f"{name}_cpu_s": round(time.process_time() - self.cpu, 2),
        }


def backend_times(
    emb: np.ndarray,
    labels: np.ndarray | None,
    *,
    final: bool = True,
    pacmap: bool = False,
    kind: str = "auto",
    graph_rows: int | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Times (s wall, and CPU s), recall, kNN preservation and peak RSS of the explorer's back end over one bank.

    ``final``: also run UMAP fed the graph (the slow part); ``pacmap``: also PaCMAP; ``kind``: the index
    (NeighbourIndex's: "auto", "exact", "ivf"). ``graph_rows``: build the graph of only the first rows (each row's
    search costs the same, so ``graph_build_*`` is scaled up to all rows and marked ``graph_extrapolated``; the
    scores then run on that graph repeated to N rows: their cost depends on its shape only, not on its values, and
    recall is sampled among the rows built). ``log`` gets the dict after every stage.
    """
    emb = np.ascontiguousarray(emb, np.float32)
    n = len(emb)
    r: dict[str, Any] = {"points": n, "dims": int(emb.shape[1])}

    def done(**kw: Any) -> None:
        r.update(kw, peak_rss_mb=round(peak_rss_mb()))
        if log is not None:
            log(dict(r))

    m = n if graph_rows is None else min(n, int(graph_rows))
    rng = np.random.default_rng(1)
    sample = np.sort(rng.choice(m, min(SAMPLE, m), replace=False))
    truth = exact_knn(emb, sample, 10)
    c = Clock()
    index = NeighbourIndex(emb, kind=kind)
    done(index="exact" if index.exact else "ivf-flat", **c.stop("index_build"))

    if index.exact:  # graph_rows is for the IVF index: an exact graph of a prefix would be another graph
        m = n
    part = index
    if m < n:  # the same index, asked for the graph of its first m rows only
        part = copy.copy(index)
        part.bank = index.bank[:m]
    c = Clock()
    sims, rows = part.graph(GRAPH_K)
    g = c.stop("graph_build")
    if m < n:
        g = {key: round(v * n / m, 1) for key, v in g.items()}
    done(
        graph_k=GRAPH_K,
        graph_extrapolated=m < n,
        graph_rows_built=m,
        **g,
        graph_recall10=round(overlap(truth, rows[sample, :10]), 4),
    )

    _, got = index.search(emb[sample], 11)
    t0 = time.perf_counter()
    for i in sample[:50]:
        index.search(emb[i], 10)
    query_ms = (time.perf_counter() - t0) / min(50, len(sample)) * 1000
    got = np.array([[j for j in g if j != s][:10] for g, s in zip(got, sample, strict=True)])
    done(query_recall10=round(overlap(truth, got), 4), query_ms=round(query_ms, 2))
    del index, part
    if m < n:
        sims, rows = np.resize(sims, (n, sims.shape[1])), np.resize(rows, (n, rows.shape[1]))

    lab = np.asarray(labels if labels is not None else np.full(n, -1), np.int64)
    classes = int(lab.max()) + 1 if (lab >= 0).any() else 0
    c = Clock()
    scores.knn_vote(sims, rows, lab, classes, 20)
    scores.label_error_score(sims, rows, lab, classes, 20)
    scores.outlier_score(sims, 10)
    scores.duplicate_score(sims)
    done(**c.stop("scores_graph"))
    c = Clock()
    scores.kmeans_clusters(emb, 10)
    done(**c.stop("kmeans"))

    c = Clock()
    pca = pca_map(emb, 2)
    done(**c.stop("pca_map"), pca_map_knn10=round(overlap(truth, exact_knn(pca, sample, 10)), 4))
    c = Clock()
    first = first_map(emb, 2, knn=(rows, sims))
    done(**c.stop("first_map"), first_map_knn10=round(overlap(truth, exact_knn(first, sample, 10)), 4))
    del first

    if final and m == n:
        k_umap = int(DEFAULTS["umap"]["n_neighbors"])
        c = Clock()
        coords = project(emb, "umap", 2, 0, knn=(rows[:, : k_umap - 1], sims[:, : k_umap - 1]))
        done(**c.stop("umap"), umap_knn10=round(overlap(truth, exact_knn(coords, sample, 10)), 4))
        del coords
    if pacmap:
        try:  # pacmap is not in requirements.txt: it lost to UMAP (BENCHMARKS.md, issue 19); pip install pacmap
            import pacmap as pm  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            return r

        c = Clock()
        coords = pm.PaCMAP(n_components=2, n_neighbors=10, random_state=0).fit_transform(emb, init="pca")
        done(**c.stop("pacmap"), pacmap_knn10=round(overlap(truth, exact_knn(coords, sample, 10)), 4))
    return r


def real_recall(path: str, n: int) -> dict[str, Any]:
    """recall@10 of the forced IVF index on real embeddings tiled to n rows (sampled queries, vs exact)."""
    z = np.load(path)
    x, _ = tile(z["emb"], z["labels"], n)
    sample = np.sort(np.random.default_rng(1).choice(n, SAMPLE, replace=False))
    truth = exact_knn(x, sample, 10)
    t = time.perf_counter()
    index = NeighbourIndex(x, kind="ivf")
    build = time.perf_counter() - t
    _, got = index.search(x[sample], 11)
    got = np.array([[j for j in g if j != s][:10] for g, s in zip(got, sample, strict=True)])
    return {
        "real_dims": int(x.shape[1]),
        "real_index_build_s": round(build, 2),
        "real_recall10": round(overlap(truth, got), 4),
    }


def one(args: argparse.Namespace) -> None:
    n = args.one
    out = Path(args.out) if args.out else None

    def log(r: dict[str, Any]) -> None:
        if out is not None:
            with out.open("a") as f:
                f.write(json.dumps(r) + "\n")

    r: dict[str, Any] = {}
    if args.real:
        r.update(real_recall(args.real, n))
        log({"points": n, **r})
    x, labels = clustered(n)
    r.update(
        backend_times(
            x,
            labels,
            final=not args.no_final,
            pacmap=n <= args.pacmap_max,
            graph_rows=args.graph_rows,
            log=lambda d: log({**d, **r}),
        )
    )
    print(json.dumps({**r, "peak_rss_mb": round(peak_rss_mb())}))


COLUMNS = [
    ("points", "rows"),
    ("index", "index"),
    ("index_build_s", "index s"),
    ("graph_build_s", "graph s"),
    ("graph_recall10", "graph R@10"),
    ("query_recall10", "query R@10"),
    ("real_recall10", "real R@10"),
    ("query_ms", "query ms"),
    ("scores_graph_s", "scores s"),
    ("kmeans_s", "k-means s"),
    ("pca_map_s", "PCA map s"),
    ("pca_map_knn10", "PCA kNN10"),
    ("first_map_s", "first map s"),
    ("first_map_knn10", "first kNN10"),
    ("umap_s", "UMAP s"),
    ("umap_knn10", "UMAP kNN10"),
    ("pacmap_s", "PaCMAP s"),
    ("pacmap_knn10", "PaCMAP kNN10"),
    ("peak_rss_mb", "peak RSS MB"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--real", help="an .npz of emb (N, F) and labels (N,) to tile for the real-embedding recall")
    ap.add_argument("--pacmap-max", type=int, default=100_000, help="run PaCMAP up to this many rows")
    ap.add_argument("--no-final", action="store_true", help="skip UMAP (the slowest stage)")
    ap.add_argument("--graph-rows", type=int, help="build the graph of only this many rows and scale its time up")
    ap.add_argument("--out", help="append each stage's numbers here as JSON lines")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # one size, in this process
    args = ap.parse_args()
    if args.one:
        one(args)
        return
    results = []
    for n in args.points:
        cmd = [sys.executable, __file__, "--one", str(n), "--pacmap-max", str(args.pacmap_max)]
        cmd += (["--real", args.real] if args.real else []) + (["--no-final"] if args.no_final else [])
        cmd += ["--out", args.out] if args.out else []
        cmd += ["--graph-rows", str(args.graph_rows)] if args.graph_rows else []
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(" | ".join(h for _, h in COLUMNS))
    for r in results:
        print(" | ".join(str(r.get(k, "-")) for k, _ in COLUMNS))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
