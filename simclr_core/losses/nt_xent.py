"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    *,
    candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
    offset: int = 0,
) -> torch.Tensor:
    r"""NT-Xent loss of two batches of projections, where row i of ``z1`` and ``z2`` are a positive pair.

    With the 2N projections :math:`z_1..z_{2N}` (both views), cosine similarity
    :math:`s_{ij} = z_i^\top z_j / (\lVert z_i\rVert \lVert z_j\rVert)` and positive index
    :math:`p(i)` (the other view of the same image):

    .. math::
        \ell_i = -\log \frac{\exp(s_{i,p(i)}/\tau)}{\sum_{k \ne i} \exp(s_{ik}/\tau)}, \qquad
        L = \frac{1}{2N} \sum_{i=1}^{2N} \ell_i

    Each anchor's denominator holds its positive and the 2(N-1) other-image negatives; the
    self-similarity is excluded. This is one (2N x 2N) matmul plus a cross-entropy.

    Across R processes (data parallel), ``candidates`` are every rank's ``(z1, z2)`` gathered
    *with gradient* (:func:`simclr_core.distributed.gather_with_grad`) and ``offset`` is where this
    rank's rows start in them. The anchors are then this rank's 2n rows and the matmul is
    (2n x 2N); the mean of the R ranks' losses is L over the whole batch, and so are DDP's
    averaged gradients.

    Args:
        z1: (n, D) projections of the first views.
        z2: (n, D) projections of the second views, row-aligned with ``z1``.
        temperature: tau > 0; lower values weigh hard negatives more.
        candidates: (N, D) x 2, all ranks' ``z1`` and ``z2``; None: this batch alone (N = n).
        offset: index of this batch's first row in ``candidates``.

    Returns:
        Scalar loss tensor (float32 even under autocast).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n = z1.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2n, D)
    if candidates is None:
        big_n, others = n, anchors
    else:
        big_n = candidates[0].shape[0]
        if not 0 <= offset <= big_n - n:
            raise ValueError(f"offset {offset} does not place {n} rows inside {big_n} candidates")
        others = F.normalize(torch.cat(candidates).float(), dim=1)  # (2N, D)
    logits = anchors @ others.T / temperature  # (2n, 2N)
    rows = torch.arange(n, device=z1.device) + offset  # this batch's rows among the candidates
    # -inf at k == i removes the self-similarity from the softmax denominator.
    logits[torch.arange(2 * n, device=z1.device), torch.cat([rows, rows + big_n])] = float("-inf")
    positives = torch.cat([rows + big_n, rows])  # view 1 of image i -> view 2 of image i, and back
    return F.cross_entropy(logits, positives)
