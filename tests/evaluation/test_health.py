"""Label-free health measures on constructed cases: collapsed, isotropic, aligned and opposite views."""

import math

import pytest
import torch

from simclr_core.evaluation.health import alignment, collapse_alarm, health, rankme, uniformity


def test_collapsed_embeddings_have_rank_one_and_raise_the_alarm():
    g = torch.Generator().manual_seed(0)
    one = torch.randn(1, 128, generator=g)
    collapsed = one.repeat(500, 1) * torch.rand(500, 1, generator=g)  # one direction, any length
    r = rankme(collapsed)
    assert r == pytest.approx(1.0, abs=0.01)
    z = collapsed + 1e-6 * torch.randn(500, 128, generator=g)
    h = health(collapsed, z, z, z)
    assert "collapse" in h and "collapsed" in h["collapse"] and "learning rate" in h["collapse"]
    assert uniformity(z) > -1e-3  # every normalised point in the same place
    assert rankme(torch.zeros(10, 4)) == 1.0


def test_isotropic_embeddings_have_nearly_full_rank_and_no_alarm():
    x = torch.randn(4096, 64, generator=torch.Generator().manual_seed(1))
    assert 60 < rankme(x) <= 64
    u = uniformity(x)
    assert u < -3.0  # spread over the sphere: close to the bound -4 of t = 2
    assert collapse_alarm(rankme(x), u) is None
    assert "collapse" not in health(x, x, x, x + 0.01)


def test_rank_counts_the_dimensions_used():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2000, 8, generator=g) @ torch.linalg.qr(torch.randn(64, 8, generator=g))[0].T  # 8 of 64
    assert 7 < rankme(x) < 8.01


def test_alignment_of_identical_opposite_and_orthogonal_views():
    z = torch.randn(100, 16, generator=torch.Generator().manual_seed(3))
    assert alignment(z, 3 * z) == pytest.approx(0.0, abs=1e-6)  # scale does not matter: normalised
    assert alignment(z, -z) == pytest.approx(4.0, abs=1e-5)  # ||a - (-a)||^2 = 4 on the unit sphere
    e = torch.eye(2)
    assert alignment(e[:1], e[1:]) == pytest.approx(2.0)


def test_uniformity_of_two_points_is_the_formula():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert uniformity(torch.cat([a, b])) == pytest.approx(-2 * 2.0)  # log exp(-2 * ||a-b||^2), ||a-b||^2 = 2
    assert uniformity(torch.cat([a, -a]), t=1.0) == pytest.approx(-4.0)
    assert math.isfinite(uniformity(torch.randn(3, 5)))


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError):
        rankme(torch.zeros(0, 3))
    with pytest.raises(ValueError):
        uniformity(torch.zeros(1, 3))
    with pytest.raises(ValueError):
        alignment(torch.zeros(2, 3), torch.zeros(3, 3))
