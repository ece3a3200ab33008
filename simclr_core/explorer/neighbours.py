"""Nearest-neighbour search in embedding space (cosine similarity), exact or through a faiss index.

:class:`NeighbourIndex` normalises its bank once, so a query costs one matrix-vector product:
14-16 ms over 60,000 x 512 on a 2-core CPU (``bench/explorer.py``). Past :data:`EXACT_MAX` rows
exact search takes longer than a user should wait for a click, and the index switches to faiss's
IVF-Flat, an approximate index whose recall@10 the bench checks against exact search.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from simclr_core.errors import UserError

READABLE = "PNG, JPEG, WebP, BMP, GIF or TIFF"
# Exact search up to this many rows. A query reads the whole bank (memory-bound): 14-16 ms at 60k x 512 and
# 230 ms at 1M on the 2-core dev CPU (bench/explorer.py, 2026-12-03), so ~20 ms here at 512-d; beyond, the
# IVF index answers in under 3 ms with recall@10 1.000 on clustered and real embeddings.
EXACT_MAX = 80_000
GRAPH_CHUNK = 2048  # query rows per matmul when building a whole k-NN graph: bounds memory to 2048 x N floats


def _unit_rows(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, F) float32 rows scaled to unit length (zero rows stay zero)."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    return F.normalize(t, dim=1)


class NeighbourIndex:
    """The ``k`` most cosine-similar bank rows of a query; built once per bank, then queried many times.

    Args:
        bank: (N, F) embeddings; need not be normalised.
        exact_max: banks up to this many rows are searched exactly; larger ones through faiss IVF-Flat.
        nprobe: IVF cells visited per query (approximate index only); more is slower and more exact.
    """

    def __init__(self, bank: torch.Tensor | np.ndarray, *, exact_max: int = EXACT_MAX, nprobe: int = 48):
        self.bank = _unit_rows(bank)  # (N, F)
        if self.bank.shape[0] == 0:
            raise UserError("the split is empty: there are no images to search among")
        self.ann = None
        if len(self) > exact_max:
            self.ann = _ivf_index(self.bank.numpy(), nprobe)

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
            sims, idx = self.ann.search(q.numpy(), k)
            return sims.astype(np.float32), idx.astype(np.int64)
        sims, idx = (q @ self.bank.T).topk(k, dim=1)  # (Q, N) -> (Q, k)
        return sims.numpy(), idx.numpy()

    def graph(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Every bank row's ``k`` nearest other rows (itself left out): (sims (N, k), rows (N, k)).

        k is clamped to N - 1; a bank of one row has an empty graph of shape (1, 0).
        """
        n = len(self)
        k = max(0, min(int(k), n - 1))
        if k == 0:
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        sims = np.empty((n, k), np.float32)
        rows = np.empty((n, k), np.int64)
        for start in range(0, n, GRAPH_CHUNK):
            stop = min(n, start + GRAPH_CHUNK)
            if self.ann is not None:
                s, i = self.ann.search(self.bank[start:stop].numpy(), k + 1)
            else:
                block = self.bank[start:stop] @ self.bank.T  # (chunk, N)
                block[torch.arange(stop - start), torch.arange(start, stop)] = -math.inf  # not its own neighbour
                s, i = (t.numpy() for t in block.topk(k, dim=1))
            if self.ann is not None:  # drop each row itself (or, with duplicates, the surplus last hit)
                own = i == np.arange(start, stop)[:, None]
                own[~own.any(1), -1] = True
                s, i = s[~own].reshape(-1, k), i[~own].reshape(-1, k)
            sims[start:stop], rows[start:stop] = s, i
        return sims, rows


def _ivf_index(bank: np.ndarray, nprobe: int):
    """A faiss IVF-Flat inner-product index over unit rows (cosine), with ~4 sqrt(N) cells."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is in requirements.txt
        raise UserError(f"searching {len(bank):,} embeddings needs faiss: pip install faiss-cpu") from None
    n, d = bank.shape
    nlist = int(4 * math.sqrt(n))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = bank[np.random.default_rng(0).choice(n, size=min(n, 40 * nlist), replace=False)]  # faiss wants >= 39
    index.train(np.ascontiguousarray(sample))
    index.add(np.ascontiguousarray(bank))
    index.nprobe = nprobe
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
