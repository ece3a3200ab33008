"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    r"""NT-Xent loss of two batches of projections, where row i of ``z1`` and ``z2`` are a positive pair.

    With the 2N projections :math:`z_1..z_{2N}` (both views), cosine similarity
    :math:`s_{ij} = z_i^\top z_j / (\lVert z_i\rVert \lVert z_j\rVert)` and positive index
    :math:`p(i)` (the other view of the same image):

    .. math::
        \ell_i = -\log \frac{\exp(s_{i,p(i)}/\tau)}{\sum_{k \ne i} \exp(s_{ik}/\tau)}, \qquad
        L = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i

    Each anchor's denominator holds its positive and the 2(N-1) other-image negatives; the
    self-similarity is excluded. This is one (2N x 2N) matmul plus a cross-entropy.

    Args:
        z1: (N, D) projections of the first views.
        z2: (N, D) projections of the second views, row-aligned with ``z1``.
        temperature: tau > 0; lower values weigh hard negatives more.

    Returns:
        Scalar loss tensor (float32 even under autocast).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
    logits = z @ z.T / temperature  # (2N, 2N)
    # -inf on the diagonal removes k == i from the softmax denominator.
    logits.fill_diagonal_(float("-inf"))
    positives = torch.arange(2 * n, device=z.device).roll(n)  # i -> i+N (mod 2N)
    return F.cross_entropy(logits, positives)
