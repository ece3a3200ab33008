import math

import pytest
import torch

from simclr_core.losses import byol_loss, info_nce, nt_xent


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """The paper's definition, written as loops over the 2N anchors."""
    z = torch.cat([z1, z2]).double()
    n2 = len(z)
    n = n2 // 2

    def sim(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        denom = sum(math.exp(sim(z[i], z[k]) / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(sim(z[i], z[pos]) / tau) / denom)
    return total / n2


@pytest.mark.parametrize("n", [1, 2, 5, 16])
@pytest.mark.parametrize("tau", [0.07, 0.1, 0.5, 1.0])
def test_matches_naive_loop(n, tau):
    g = torch.Generator().manual_seed(n * 100 + int(tau * 100))
    z1, z2 = torch.randn(n, 8, generator=g), torch.randn(n, 8, generator=g)
    assert nt_xent(z1, z2, tau).item() == pytest.approx(naive_nt_xent(z1, z2, tau), rel=1e-5, abs=1e-6)


def test_scale_invariant_and_symmetric():
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    base = nt_xent(z1, z2, 0.5)
    assert torch.allclose(nt_xent(3 * z1, 0.1 * z2, 0.5), base, atol=1e-6)
    assert torch.allclose(nt_xent(z2, z1, 0.5), base, atol=1e-6)


def test_identical_views_far_apart_give_low_loss():
    # Orthogonal images, each view equal to its pair: the positive dominates every denominator.
    z = torch.eye(4)
    aligned = nt_xent(z, z, 0.1).item()
    shuffled = nt_xent(z, z.roll(1, 0), 0.1).item()
    assert aligned < 0.01 < shuffled


def test_gradient_flows_to_both_views():
    z1, z2 = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    nt_xent(z1, z2).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_bad_input():
    with pytest.raises(ValueError, match="must both be"):
        nt_xent(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="positive"):
        nt_xent(torch.randn(3, 4), torch.randn(3, 4), temperature=0)


# ---------------------------------------------------------------- NT-Xent over gathered candidates


def test_candidates_split_over_ranks_give_the_whole_batch_loss_and_gradient():
    # R "ranks" of n rows each: the mean of their losses over the gathered candidates is the loss
    # of the whole batch, and so is the gradient (what DDP averages).
    R, n = 3, 4
    z1, z2 = torch.randn(R * n, 8, dtype=torch.double), torch.randn(R * n, 8, dtype=torch.double)
    whole_a, whole_b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    nt_xent(whole_a, whole_b, 0.2).backward()
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    parts = [
        nt_xent(a[r * n : (r + 1) * n], b[r * n : (r + 1) * n], 0.2, candidates=(a, b), offset=r * n) for r in range(R)
    ]
    (sum(parts) / R).backward()
    assert (sum(parts) / R).item() == pytest.approx(nt_xent(z1, z2, 0.2).item(), rel=1e-6)  # float32 inside
    assert torch.allclose(a.grad, whole_a.grad, atol=1e-7) and torch.allclose(b.grad, whole_b.grad, atol=1e-7)


def test_candidates_offset_must_fit():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="offset"):
        nt_xent(z[:2], z[:2], candidates=(z, z), offset=3)


# ---------------------------------------------------------------- MoCo's InfoNCE


def naive_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> float:
    """MoCo's definition as loops: the positive key against every queued key."""
    total = 0.0
    for i in range(len(q)):
        qi = q[i].double() / q[i].double().norm()
        ki = k[i].double() / k[i].double().norm()
        pos = math.exp(float(qi @ ki) / tau)
        neg = sum(math.exp(float(qi @ nj.double()) / tau) for nj in queue)
        total += -math.log(pos / (pos + neg))
    return total / len(q)


@pytest.mark.parametrize("n,K", [(1, 1), (3, 7), (8, 32)])
@pytest.mark.parametrize("tau", [0.07, 0.2, 1.0])
def test_info_nce_matches_naive_loop(n, K, tau):
    g = torch.Generator().manual_seed(n * 1000 + K + int(tau * 100))
    q, k = torch.randn(n, 6, generator=g), torch.randn(n, 6, generator=g)
    queue = torch.nn.functional.normalize(torch.randn(K, 6, generator=g), dim=1)
    assert info_nce(q, k, queue, tau).item() == pytest.approx(naive_info_nce(q, k, queue, tau), rel=1e-5, abs=1e-6)


def test_info_nce_trains_only_the_queries():
    q, k = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    queue = torch.randn(5, 3, requires_grad=True)
    info_nce(q, k, queue).backward()
    assert q.grad.abs().sum() > 0 and k.grad is None and queue.grad is None


def test_info_nce_bad_input():
    with pytest.raises(ValueError, match="need q, k"):
        info_nce(torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match="positive"):
        info_nce(torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 4), temperature=-1)


# ---------------------------------------------------------------- BYOL's regression loss


def naive_byol(p: torch.Tensor, z: torch.Tensor) -> float:
    """Squared distance of the unit vectors, averaged over rows."""
    pairs = zip(p.double(), z.double(), strict=True)
    return sum(float(((pi / pi.norm() - zi / zi.norm()) ** 2).sum()) for pi, zi in pairs) / len(p)


@pytest.mark.parametrize("n", [1, 4, 16])
def test_byol_loss_matches_naive_loop(n):
    g = torch.Generator().manual_seed(n)
    p, z = torch.randn(n, 8, generator=g), torch.randn(n, 8, generator=g)
    assert byol_loss(p, z).item() == pytest.approx(naive_byol(p, z), rel=1e-5, abs=1e-6)


def test_byol_loss_range_and_target_detached():
    p = torch.randn(5, 4, requires_grad=True)
    z = torch.randn(5, 4, requires_grad=True)
    assert byol_loss(p.detach(), p.detach()).item() == pytest.approx(0, abs=1e-6)
    assert byol_loss(p.detach(), -3 * p.detach()).item() == pytest.approx(4, abs=1e-6)
    byol_loss(p, z).backward()
    assert p.grad.abs().sum() > 0 and z.grad is None
    with pytest.raises(ValueError, match="must both be"):
        byol_loss(torch.randn(3, 4), torch.randn(3, 5))
