import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from simclr_core.errors import UserError
from simclr_core.explorer import projection
from simclr_core.explorer.projection import cache_path, cached_project, project


@pytest.fixture(autouse=True)
def _one_openmp_thread():
    """t-SNE's OpenMP threads spin-wait on a busy shared CPU (60 points: 5 s instead of 0.2 s)."""
    with threadpool_limits(1, user_api="openmp"):
        yield


@pytest.fixture
def blobs() -> np.ndarray:
    """60 points in 8-D around three well-separated centres."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 5
    return (np.repeat(centres, 20, axis=0) + rng.normal(size=(60, 8)) * 0.1).astype(np.float32)


@pytest.mark.parametrize(
    "method,dims,params",
    [
        ("pca", 2, {}),
        ("pca", 3, {}),
        ("tsne", 2, {"perplexity": 10}),
        ("umap", 2, {"n_neighbors": 10}),
        ("umap", 3, {"n_neighbors": 10, "min_dist": 0.5}),
    ],
)
def test_shapes_determinism_and_clusters(blobs, method, dims, params):
    a = project(blobs, method, dims, seed=1, **params)
    assert a.shape == (60, dims) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.allclose(project(blobs, method, dims, seed=1, **params), a)
    # the three blobs stay apart: every point lies nearest to its own blob's centre
    centres = a.reshape(3, 20, dims).mean(1)
    nearest = np.linalg.norm(a[:, None] - centres[None], axis=2).argmin(1)
    assert np.array_equal(nearest, np.repeat(np.arange(3), 20))


def test_pca_sees_cosine_geometry(blobs):
    # rows are L2-normalised first: rescaling a row does not move its point
    scaled = blobs * np.linspace(0.5, 3, 60, dtype=np.float32)[:, None]
    assert np.allclose(project(scaled, "pca"), project(blobs, "pca"), atol=1e-4)


def test_perplexity_above_point_count_is_clipped(blobs):
    assert project(blobs[:10], "tsne", perplexity=50).shape == (10, 2)


def test_cache_hit_reads_the_file(blobs, tmp_path, monkeypatch):
    first = cached_project(blobs, tmp_path, "k1", "pca", 2)
    path = cache_path(tmp_path, "k1", "pca", 2)
    assert path.is_file() and np.array_equal(np.load(path), first)

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(projection, "project", boom)
    assert np.array_equal(cached_project(blobs, tmp_path, "k1", "pca", 2), first)
    # another key, method parameter or dimension is another file: computing it calls project
    for args, kw in [(("k2", "pca", 2), {}), (("k1", "pca", 3), {}), (("k1", "umap", 2), {"n_neighbors": 5})]:
        with pytest.raises(AssertionError, match="recomputed"):
            cached_project(blobs, tmp_path, *args, **kw)


def test_cache_with_wrong_rows_or_damaged_file_is_recomputed(blobs, tmp_path):
    cached_project(blobs, tmp_path, "k", "pca", 2)
    assert cached_project(blobs[:30], tmp_path, "k", "pca", 2).shape == (30, 2)
    cache_path(tmp_path, "k", "pca", 2).write_bytes(b"not numpy")
    assert np.allclose(cached_project(blobs, tmp_path, "k", "pca", 2), project(blobs, "pca"))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"method": "lda"}, "unknown projection 'lda'"),
        ({"dims": 4}, "2-D or 3-D"),
        ({"dims": 1}, "2-D or 3-D"),
    ],
)
def test_bad_arguments_are_user_errors(blobs, tmp_path, kw, match):
    with pytest.raises(UserError, match=match):
        project(blobs, **kw)
    with pytest.raises(UserError, match=match):
        cached_project(blobs, tmp_path, "k", **kw)


def test_too_few_points(blobs):
    with pytest.raises(UserError, match="at least 4 points"):
        project(blobs[:3], "pca", 2)


def test_align_undoes_rotation_scale_shift_and_reflection():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(200, 2))
    theta = 1.1
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag([1, -1])
    moved = 3.5 * ref @ rot + np.array([10.0, -4.0])
    assert np.allclose(projection.align(ref, moved), ref, atol=1e-5)
    with pytest.raises(ValueError):
        projection.align(ref, moved[:10])


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_trajectory_aligns_each_frame_to_the_previous(blobs, method):
    # frame 2 is frame 1 rotated in embedding space: the picture must not jump
    q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(8, 8)))
    frames = [blobs, blobs @ q.astype(np.float32)]
    params = {"umap": {"n_neighbors": 10}, "tsne": {"perplexity": 10}}.get(method, {})
    a, b = projection.trajectory(frames, method, 2, seed=0, **params)
    assert a.shape == b.shape == (60, 2)
    spread = np.linalg.norm(a - a.mean(0), axis=1).mean()
    assert np.linalg.norm(a - b, axis=1).mean() < 0.35 * spread
    # extending with previous= continues from the last frame
    [c] = projection.trajectory(frames[1:], method, 2, seed=0, previous=b, **params)
    assert np.linalg.norm(c - b, axis=1).mean() < 0.35 * spread


def clustered_bank(n: int = 600, d: int = 16, seed: int = 0) -> np.ndarray:
    """n points around 6 centres, each spread along its own 3-D subspace: neighbours with structure."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, d)) * 3
    basis = rng.normal(size=(6, 3, d))
    lab = rng.integers(0, 6, n)
    return (centres[lab] + np.einsum("nl,nld->nd", rng.normal(size=(n, 3)), basis[lab])).astype(np.float32)


def knn10(x: np.ndarray) -> np.ndarray:
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1)[:, :10]


def test_umap_fed_the_graph_keeps_neighbours(monkeypatch):
    from simclr_core.explorer.neighbours import NeighbourIndex

    x = clustered_bank()
    sims, rows = NeighbourIndex(x).graph(20)
    seen = {}
    import umap

    real = umap.UMAP.__init__

    def spy(self, *a, **kw):
        seen.update(kw)
        real(self, *a, **kw)

    monkeypatch.setattr(umap.UMAP, "__init__", spy)
    y = project(x, "umap", 2, knn=(rows, sims), n_neighbors=10)
    assert y.shape == (600, 2) and y.dtype == np.float32 and np.isfinite(y).all()
    idx, dist, _ = seen["precomputed_knn"]
    assert idx.shape == dist.shape == (600, 10)  # itself plus 9 graph neighbours
    assert np.array_equal(idx[:, 0], np.arange(600)) and np.array_equal(idx[:, 1:], rows[:, :9])
    assert np.allclose(dist[:, 1:] ** 2, 2 - 2 * sims[:, :9], atol=1e-5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    kept = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(knn10(xn), knn10(y), strict=True)])
    assert kept > 0.3  # chance: 10 / 599 = 0.017


def test_a_graph_that_does_not_fit_is_ignored(blobs):
    rows = np.zeros((59, 3), np.int64)  # one row short
    y = project(blobs, "umap", 2, knn=(rows, np.ones((59, 3), np.float32)), n_neighbors=10)
    assert y.shape == (60, 2)  # UMAP searched its own neighbours


def test_graph_of_rows_cuts_the_split_graph():
    from simclr_core.explorer.neighbours import NeighbourIndex

    x = clustered_bank(400)
    sims, rows = NeighbourIndex(x).graph(50)
    same = projection.graph_of_rows(np.arange(400), rows, sims, 14)
    assert same is not None and np.array_equal(same[0], rows[:, :14])
    half = np.arange(0, 400, 2)
    cut = projection.graph_of_rows(half, rows, sims, 10)
    assert cut is not None and cut[0].shape == (200, 10)
    # renumbered to positions in `half`, and the same as the graph of those rows alone
    exact = NeighbourIndex(x[half]).graph(10)[1]
    assert np.array_equal(cut[0], exact)
    assert projection.graph_of_rows(np.arange(0, 400, 40), rows, sims, 10) is None  # a tenth: too thin


@pytest.mark.parametrize("dims", [2, 3])
def test_first_map_is_pca_of_the_normalised_rows(dims, monkeypatch):
    x = clustered_bank(500) * np.random.default_rng(1).uniform(0.5, 3, (500, 1)).astype(np.float32)
    monkeypatch.setattr(projection, "FIRST_CHUNK", 64)  # several blocks
    y = projection.first_map(x, dims)
    ref = project(x, "pca", dims)
    assert y.shape == (500, dims) and np.abs(y).max() == pytest.approx(10)  # UMAP's range
    for a in range(dims):  # the same axes up to sign and scale
        assert abs(np.corrcoef(y[:, a], ref[:, a])[0, 1]) > 0.999


def test_place_puts_each_row_among_its_placed_neighbours_in_passes():
    coords = np.array([[0.0, 0.0], [4.0, 8.0]], np.float32)
    rows = np.array([[0, 1], [0, 2], [0, 1], [2, -1], [-1, -1], [0, 1]])  # rows 0, 1 given; 4 knows nobody
    sims = np.array([[1, 1], [1, 1], [1, 3], [0.5, 0], [0, 0], [1, 1]], np.float32)
    out = projection.place(coords, np.array([0, 1]), 6, (rows, sims))
    assert out[:2].tolist() == coords.tolist()
    assert out[2] == pytest.approx([3, 6], abs=1e-4)  # 1/4 of row 0 + 3/4 of row 1
    assert out[3] == pytest.approx(out[2], abs=1e-4)  # the next pass: where its one neighbour (2) went
    assert out[5] == pytest.approx([2, 4], abs=1e-4)
    assert np.isfinite(out).all() and out[4] == pytest.approx(np.mean(out[[0, 1, 2, 3, 5]], 0), abs=1e-4)


def test_a_large_first_map_is_umap_of_a_sample_with_the_rest_placed(monkeypatch):
    """Issue 19: above FIRST_SAMPLE rows the first map is UMAP of that many, the others placed by the graph."""
    from simclr_core.explorer.neighbours import NeighbourIndex

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    x = (np.repeat(centres, 100, axis=0) + rng.normal(size=(300, 16))).astype(np.float32)
    sims, rows = NeighbourIndex(x).graph(10)
    monkeypatch.setattr(projection, "FIRST_SAMPLE", 60)
    fitted: list[int] = []
    real = projection.project
    monkeypatch.setattr(projection, "project", lambda x, *a, **k: fitted.append(len(x)) or real(x, *a, **k))
    y = projection.first_map(x, 2, knn=(rows, sims))
    assert fitted == [60] and y.shape == (300, 2) and np.isfinite(y).all()
    # the three clusters stay apart: every point lies nearest to its own cluster's centre on the map
    centre = y.reshape(3, 100, 2).mean(1)
    assert np.array_equal(np.linalg.norm(y[:, None] - centre[None], axis=2).argmin(1), np.repeat(np.arange(3), 100))
    # without a graph, or at most FIRST_SAMPLE rows: PCA
    assert np.array_equal(projection.first_map(x, 2), projection.pca_map(x, 2)) and fitted == [60]
    monkeypatch.setattr(projection, "FIRST_SAMPLE", 300)
    assert np.array_equal(projection.first_map(x, 2, knn=(rows, sims)), projection.pca_map(x, 2))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_first_map_of_a_tiny_split_says_how_many_are_needed(n):
    with pytest.raises(UserError, match="at least 4 points"):
        projection.first_map(np.ones((n, 5)), 2)


def test_the_graph_fed_projection_has_its_own_cache_file(blobs, tmp_path):
    from simclr_core.explorer.neighbours import NeighbourIndex

    sims, rows = NeighbourIndex(blobs).graph(10)
    cached_project(blobs, tmp_path, "k", "umap", knn=(rows, sims), n_neighbors=10)
    assert cache_path(tmp_path, "k", "umap", graph=True, n_neighbors=10).is_file()
    assert not cache_path(tmp_path, "k", "umap", n_neighbors=10).is_file()
