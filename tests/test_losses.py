import math

import pytest
import torch

from simclr_core.losses import nt_xent


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
