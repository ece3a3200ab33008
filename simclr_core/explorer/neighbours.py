"""Nearest-neighbour search in embedding space (cosine similarity), exact or through a faiss index.

:class:`NeighbourIndex` is the one owner of neighbour search: a click's query (:meth:`~NeighbourIndex.search`)
and the whole split's k-NN graph (:meth:`~NeighbourIndex.graph`) that the scores and UMAP read. It
normalises its bank once, so an exact query costs one matrix-vector product: 14-16 ms over 60,000 x 512
on a 2-core CPU. Past :data:`EXACT_MAX` rows it switches to faiss IVF-Flat, chosen over HNSW and IVF-SQ8
by measurement (BENCHMARKS.md, issue 19): recall@10 against exact search >= 0.99 on
clustered and real (CIFAR-10) embeddings at :data:`NPROBE` 32, where HNSW (M 32, efSearch 128) took 3.5x
longer to build at 100k for recall 0.994, and IVF-SQ8 capped recall at 0.996 on clustered embeddings.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from simclr_core.errors import UserError

READABLE = "PNG, JPEG, WebP, BMP, GIF or TIFF"
# Exact search up to this many rows. A query reads the whole bank (memory-bound): 14-16 ms at 60k x 512 and
# 230 ms at 1M on the 2-core dev CPU (bench/explorer.py, 2026-12-03), so ~20 ms here at 512-d; beyond, IVF-Flat
# answers a query in 5 ms at 1M x 512 with recall@10 0.9996 (14 ms at 100k on a busier box; bench/explorer_backend.py,
# BENCHMARKS.md issue 19).
EXACT_MAX = 80_000
NPROBE = 32  # IVF cells per query: recall@10 0.991 / 0.993 on real CIFAR-10 embeddings at 60k / 200k (16: 0.953)
GRAPH_CHUNK = 2048  # exact graph: query rows per matmul, bounding memory to 2048 x N floats (650 MB at 80k)
ANN_CHUNK = 16_384  # IVF graph: query rows per faiss call (memory: the (chunk, k) answers only)
KINDS = ("auto", "exact", "ivf")
GraphProgress = Callable[[int, int], None]  # (rows done, rows in all)


def _rows(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, F) float32 rows, sharing memory with ``x`` when it is float32 already."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    return t.unsqueeze(0) if t.dim() == 1 else t


def _unit_rows(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, F) float32 rows scaled to unit length (zero rows stay zero)."""
    return F.normalize(_rows(x), dim=1)


class NeighbourIndex:
    """The ``k`` most cosine-similar bank rows of a query; built once per bank, then queried many times.

    Args:
        bank: (N, F) embeddings; need not be normalised.
        exact_max: banks up to this many rows are searched exactly; larger ones through faiss IVF-Flat.
        nprobe: IVF cells visited per query (approximate index only); more is slower and more exact.
        kind: "auto" (exact up to ``exact_max`` rows, else IVF), "exact" or "ivf" (forced; for benches/tests).

    Costs at 1M x 512 on the 2-core dev CPU (BENCHMARKS.md, issue 19): the IVF index 106 CPU-s (k-means of
    4,000 cells on a sample, then one pass to file every row); the GRAPH_K = 50 graph ~1,800 CPU-s (15 to 30
    min); memory: faiss's copy of the unit rows (2 GB) and the graph's 0.6 GB, the bank itself being the
    caller's array (not copied when float32).
    """

    def __init__(
        self,
        bank: torch.Tensor | np.ndarray,
        *,
        exact_max: int = EXACT_MAX,
        nprobe: int = NPROBE,
        kind: str = "auto",
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        rows = _rows(bank)
        if rows.shape[0] == 0:
            raise UserError("the split is empty: there are no images to search among")
        self.ann = None
        if kind == "ivf" or (kind == "auto" and rows.shape[0] > exact_max):
            # the bank as given (no copy when float32): faiss holds the unit rows, normalised block by block,
            # and the graph normalises its query blocks; a normalised copy here would be 2 GB more at 1M x 512
            self.bank = rows
            self.ann = _ivf_index(rows.numpy(), nprobe)
        else:
            self.bank = F.normalize(rows, dim=1)  # (N, F) unit rows: exact search is one matmul

    def __len__(self) -> int:
        return int(self.bank.shape[0])

    @property
    def exact(self) -> bool:
        """True when every search is exact (no approximate index)."""
        return self.ann is None

    def search(self, query: torch.Tensor | np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(similarities (Q, k) descending, bank rows (Q, k)) of each query row; k is clamped to N."""
        q = _unit_rows(query)  # (Q, F)
        if q.shape[1] != self.bank.shape[1]:
            raise UserError(
                f"the query has {q.shape[1]} features but the bank {self.bank.shape[1]}: "
                "embed both with the same encoder and feature (h or z)"
            )
        k = max(1, min(int(k), len(self)))
        if self.ann is not None:
            sims, idx = self.ann.search(np.ascontiguousarray(q.numpy()), k)
            return _fill_misses(sims, idx)
        sims, idx = (q @ self.bank.T).topk(k, dim=1)  # (Q, N) -> (Q, k)
        return sims.numpy(), idx.numpy()

    def graph(self, k: int, progress: GraphProgress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every bank row's ``k`` nearest other rows (itself left out): (sims (N, k), rows (N, k)).

        k is clamped to N - 1; a bank of one row has an empty graph of shape (1, 0). ``progress(done, total)``
        is called after each block of rows. Memory beyond the answers: one block (see :data:`GRAPH_CHUNK`).
        """
        n = len(self)
        k = max(0, min(int(k), n - 1))
        if k == 0:
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        sims = np.empty((n, k), np.float32)
        rows = np.empty((n, k), np.int64)
        chunk = GRAPH_CHUNK if self.ann is None else ANN_CHUNK
        if progress is not None:
            progress(0, n)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            if self.ann is not None:
                s, i = _fill_misses(*self.ann.search(_unit_rows(self.bank[start:stop]).numpy(), k + 1))
                # drop each row itself (or, with duplicates, the surplus last hit)
                own = i == np.arange(start, stop)[:, None]
                own[~own.any(1), -1] = True
                s, i = s[~own].reshape(-1, k), i[~own].reshape(-1, k)
            else:
                block = self.bank[start:stop] @ self.bank.T  # (chunk, N)
                block[torch.arange(stop - start), torch.arange(start, stop)] = -math.inf  # not its own neighbour
                s, i = (t.numpy() for t in block.topk(k, dim=1))
            sims[start:stop], rows[start:stop] = s, i
            if progress is not None:
                progress(stop, n)
        return sims, rows


def _fill_misses(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """faiss answers -1 where the probed cells held fewer than k rows; repeat the row's last real hit there.

    Only tiny or forced indexes (fewer rows than nprobe cells hold) can miss; the graph's consumers
    index with these rows, so a -1 must never leave this module.
    """
    sims, idx = sims.astype(np.float32), idx.astype(np.int64)
    miss = idx < 0
    if miss.any():
        last = np.maximum((~miss).sum(1) - 1, 0)  # hits come first, misses pad the end
        r = np.arange(len(idx))
        fill_i, fill_s = idx[r, last], sims[r, last]
        idx = np.where(miss, fill_i[:, None], idx)
        sims = np.where(miss, fill_s[:, None], sims)
        idx[idx < 0] = 0  # a row with no hit at all (cannot happen with nprobe >= 1 and a filled index)
    return sims, idx


def _ivf_index(bank: np.ndarray, nprobe: int):
    """A faiss IVF-Flat inner-product index over ``bank``'s rows made unit (cosine), with ~4 sqrt(N) cells."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is in requirements.txt
        raise UserError(f"searching {len(bank):,} embeddings needs faiss: pip install faiss-cpu") from None
    n, d = bank.shape
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training rows per cell
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = bank[np.sort(np.random.default_rng(0).choice(n, size=min(n, 40 * nlist), replace=False))]
    index.train(_unit_rows(sample).numpy())
    for start in range(0, n, ANN_CHUNK):  # unit rows, one block at a time
        index.add(_unit_rows(bank[start : start + ANN_CHUNK]).numpy())
    index.nprobe = min(max(1, int(nprobe)), nlist)
    return index


def cosine_topk(
    query: torch.Tensor | np.ndarray, bank: torch.Tensor | np.ndarray, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """One search of a bank used once; keep a :class:`NeighbourIndex` to search one bank many times."""
    return NeighbourIndex(bank).search(query, k)


def image_from_bytes(data: bytes, size: int, name: str = "the upload") -> torch.Tensor:
    """Decode an uploaded image of any size into a (1, 3, size, size) uint8 tensor.

    Resizes the shorter side to ``size`` and centre-crops, as the dataset folders are stored;
    EXIF rotation is applied and any mode (grey, palette, RGBA) becomes RGB.
    """
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise UserError(f"{name} is not an image that can be read; upload a {READABLE} file") from None
    rgb = ImageOps.fit(ImageOps.exif_transpose(img).convert("RGB"), (size, size), method=Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).unsqueeze(0)
