"""Nearest-neighbour search: exact against brute force, the k-NN graph, and the approximate index's recall."""

import numpy as np
import pytest
import torch

from simclr_core.errors import UserError
from simclr_core.explorer.neighbours import NeighbourIndex, cosine_topk, image_from_bytes


def brute(q: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    bn = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    return np.argsort(-(qn @ bn.T), axis=1, kind="stable")[:, :k]


@pytest.fixture
def clustered():
    """20,000 points around 50 centres in 64-D: structured like real embeddings."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 64))
    x = centres[rng.integers(0, 50, 20_000)] + 0.3 * rng.standard_normal((20_000, 64))
    q = centres[rng.integers(0, 50, 200)] + 0.3 * rng.standard_normal((200, 64))
    return x.astype(np.float32), q.astype(np.float32)


def test_exact_search_is_brute_force_cosine():
    rng = np.random.default_rng(1)
    bank, q = rng.standard_normal((500, 16)) * rng.uniform(0.1, 5, (500, 1)), rng.standard_normal((7, 16))
    index = NeighbourIndex(bank)
    sims, rows = index.search(q, 5)
    assert index.exact and sims.shape == rows.shape == (7, 5)
    assert np.array_equal(rows, brute(q, bank, 5))
    assert np.all(np.diff(sims, axis=1) <= 0) and np.all(np.abs(sims) <= 1 + 1e-6)
    _, one_r = index.search(q[0], 5)  # a single (F,) query
    assert np.array_equal(one_r[0], rows[0])
    assert np.array_equal(cosine_topk(q, bank, 5)[1], rows)


def test_k_is_clamped_and_mistakes_are_user_errors():
    index = NeighbourIndex(np.eye(3))
    assert index.search(np.ones(3), 10)[1].shape == (1, 3)
    with pytest.raises(UserError, match="features"):
        index.search(np.ones(4), 1)
    with pytest.raises(UserError, match="empty"):
        NeighbourIndex(np.zeros((0, 3)))


def test_graph_leaves_each_row_out_and_matches_brute_force():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    _, rows = NeighbourIndex(x).graph(6)
    assert rows.shape == (300, 6) and not (rows == np.arange(300)[:, None]).any()
    full = brute(x, x, 7)[:, 1:]  # brute force, itself first
    assert np.array_equal(rows, full)
    one = NeighbourIndex(x[:1]).graph(5)
    assert one[0].shape == (1, 0)
    assert NeighbourIndex(x[:3]).graph(50)[1].shape == (3, 2)  # k clamped to N - 1


def test_approximate_index_recall_at_10(clustered):
    x, q = clustered
    ann = NeighbourIndex(x, exact_max=0)  # force the faiss IVF index
    assert not ann.exact
    _, got = ann.search(q, 10)
    truth = brute(q, x, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)])
    assert recall >= 0.95


def test_approximate_graph_drops_the_row_itself(clustered):
    x, _ = clustered
    _, rows = NeighbourIndex(x[:3000], exact_max=0).graph(10)
    assert rows.shape == (3000, 10) and not (rows == np.arange(3000)[:, None]).any()
    exact = NeighbourIndex(x[:3000]).graph(10)[1]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact, strict=True)]) >= 0.95


def test_image_from_bytes_rejects_non_images():
    with pytest.raises(UserError, match="not an image"):
        image_from_bytes(b"hello", 32)
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.new("L", (50, 20), 128).save(buf, "PNG")
    t = image_from_bytes(buf.getvalue(), 16)
    assert t.shape == (1, 3, 16, 16) and t.dtype == torch.uint8


def test_graph_reports_progress_and_the_forced_index_matches_exact(clustered):
    x, _ = clustered
    calls = []
    ann = NeighbourIndex(x[:5000], kind="ivf")
    assert not ann.exact
    sims, rows = ann.graph(10, lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 5000) and calls[-1] == (5000, 5000)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:], strict=False))
    exact = NeighbourIndex(x[:5000], kind="exact").graph(10)[1]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact, strict=True)]) >= 0.95
    assert np.all(np.diff(sims, axis=1) <= 1e-6)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_banks_through_the_forced_index_never_answer_minus_one(n):
    x = np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32)
    index = NeighbourIndex(x, kind="ivf")  # one cell: faiss pads missing answers with -1
    sims, rows = index.search(x, 10)  # k larger than the bank: clamped
    assert rows.shape == (n, n) and rows.min() >= 0 and rows.max() < n
    g_sims, g_rows = index.graph(50)
    assert g_rows.shape == (n, n - 1) and (g_rows.size == 0 or g_rows.min() >= 0)
    assert not (g_rows == np.arange(n)[:, None]).any()


def test_unknown_index_kind():
    with pytest.raises(ValueError, match="kind"):
        NeighbourIndex(np.eye(3), kind="hnsw")
