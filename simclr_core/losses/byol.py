"""BYOL's regression loss (Grill et al. 2020, eq. 2): normalised MSE between prediction and target."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    r"""Mean normalised squared error of online predictions against target projections.

    With :math:`\bar p = p/\lVert p\rVert` and :math:`\bar z = z/\lVert z\rVert`:

    .. math::
        \ell_i = \lVert \bar p_i - \bar z_i \rVert_2^2 = 2 - 2\,\frac{p_i^\top z_i}{\lVert p_i\rVert \lVert z_i\rVert},
        \qquad L = \frac{1}{N} \sum_{i=1}^{N} \ell_i

    No negatives; the target is detached (it is an EMA of the online network, not trained).
    The symmetric BYOL loss is the sum over both view orders (the caller adds the two).

    Args:
        p: (N, D) online predictions q(g(f(v))).
        z: (N, D) target projections g'(f'(v')), row-aligned with ``p``.

    Returns:
        Scalar loss tensor in [0, 4] (float32 even under autocast).
    """
    if p.shape != z.shape or p.dim() != 2:
        raise ValueError(f"p and z must both be (N, D), got {tuple(p.shape)} and {tuple(z.shape)}")
    p = F.normalize(p.float(), dim=1)
    z = F.normalize(z.detach().float(), dim=1)
    return (2 - 2 * (p * z).sum(dim=1)).mean()
