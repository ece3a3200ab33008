"""Issue 20's label-free signals (evaluation/health.py): α-ReQ, LiDAR and the k-means pseudo-label kNN score,
each against matrices whose answer is known, and recorded live by a training run for h and z."""

import math

import pytest
import torch

from simclr_core.cli.train import train
from simclr_core.evaluation.health import areq, health, lidar, pseudo_knn, rankme

from tests.conftest import tiny_config

N, D = 400, 32
SIGNALS = [f"{s}_{f}" for s in ("areq", "lidar", "pseudo_knn") for f in ("h", "z")]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def low_rank(rank: int, n: int = N, d: int = D, seed: int = 0) -> torch.Tensor:
    g = gen(seed)
    return torch.randn(n, rank, generator=g) @ torch.randn(rank, d, generator=g)


# --- α-ReQ -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_areq_recovers_a_known_power_law(alpha):
    lam = torch.arange(1, D + 1, dtype=torch.float64) ** -alpha  # λ_i ∝ i^-α
    x = torch.randn(4000, D, generator=gen(1), dtype=torch.float64) * lam.sqrt()
    assert areq(x) == pytest.approx(alpha, abs=0.1)
    assert areq(x * 1e3) == pytest.approx(areq(x))  # the scale of the embeddings does not matter


def test_areq_isotropic_collapsed_and_low_rank():
    # white noise: a flat spectrum, bent only by sampling (Marchenko-Pastur), so α is small
    assert 0 <= areq(torch.randn(N, D, generator=gen())) < 0.6
    assert math.isnan(areq(torch.ones(N, D)))  # all rows equal: no spectrum to fit
    assert math.isnan(areq(low_rank(1)))  # rank 1: one eigenvalue
    # rank 4: fitted over its 4 non-zero eigenvalues only, which are nearly flat (α-ReQ's blind spot)
    assert 0 < areq(low_rank(4)) < 1.5


# --- LiDAR ---------------------------------------------------------------------------------------------------


def test_lidar_views_that_agree_or_disagree():
    images = torch.randn(200, D, generator=gen(2))
    noise = torch.randn(200, 4, D, generator=gen(3))
    agree = images[:, None] + 0.01 * noise  # views = image + tiny noise: every direction tells images apart
    assert lidar(agree) > 0.8 * D
    # the views disagree in all but two directions (augmentations that wipe out what told the images apart)
    spread = torch.full((D,), 30.0)
    spread[:2] = 0.01
    disagree = images[:, None] + noise * spread
    assert lidar(disagree) < 3
    assert rankme(disagree.flatten(0, 1)) > 0.8 * D  # while RankMe, blind to views, still reads it as healthy


def test_lidar_collapsed_and_low_rank():
    assert lidar(torch.ones(50, 4, D)) == pytest.approx(1.0)  # every view of every image the same point
    images = low_rank(3, n=200)
    views = images[:, None] + 0.01 * torch.randn(200, 4, D, generator=gen(4))
    assert 2.5 < lidar(views) < 4  # three directions tell the images apart
    with pytest.raises(ValueError, match="views"):
        lidar(torch.ones(10, 1, D))  # one view: no within-class spread


# --- k-means pseudo-label kNN --------------------------------------------------------------------------------


def test_pseudo_knn_clusters_noise_and_collapse():
    centres = torch.randn(10, 64, generator=gen(5)) * 5
    clusters = centres[torch.arange(500) % 10] + torch.randn(500, 64, generator=gen(6))
    assert pseudo_knn(clusters) > 0.95
    # isotropic noise in 256 dimensions: k-means' cells carry little that neighbours share (chance: 0.1)
    noise = pseudo_knn(torch.randn(500, 256, generator=gen(7)))
    assert noise < 0.4  # measured 0.35: k-means' own cells keep it above chance
    assert pseudo_knn(clusters, seed=3) == pseudo_knn(clusters, seed=3)  # seeded: the same every time
    assert pseudo_knn(torch.ones(50, 8)) == 1.0  # one point: one cluster (RankMe says collapsed)
    assert pseudo_knn(low_rank(2, d=64)) > noise  # a plane: neighbours share a cell more often


# --- recorded live -------------------------------------------------------------------------------------------


def test_health_leaves_out_undefined_signals():
    z = torch.randn(40, 8, generator=gen(8))
    out = health(torch.ones(40, 16), z, z, z + 0.1, torch.ones(10, 4, 16), torch.randn(10, 4, 8, generator=gen(9)))
    assert "areq_h" not in out and "areq_z" in out  # collapsed h: α undefined, not NaN in metrics.jsonl
    assert out["lidar_h"] == pytest.approx(1.0) and out["pseudo_knn_h"] == 1.0 and "collapse" in out


def test_training_writes_the_signals_for_h_and_z(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.run.probe_size = 40
    run = train(cfg)
    epochs = run.metrics("epoch")
    assert len(epochs) == 2
    for m in epochs:
        assert set(SIGNALS) <= set(m), sorted(m)
        assert all(math.isfinite(m[k]) for k in SIGNALS)
        assert 1 <= m["lidar_h"] <= 40 and 0 <= m["pseudo_knn_z"] <= 1
