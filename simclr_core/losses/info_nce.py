"""InfoNCE against a queue of negatives, the loss of MoCo (He et al. 2020; v2: Chen et al. 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    r"""InfoNCE of queries against their keys (positives) and a queue of keys from earlier batches (negatives).

    With L2-normalised query :math:`q_i`, its key :math:`k_i` and the K queued keys :math:`n_j`:

    .. math::
        \ell_i = -\log \frac{\exp(q_i^\top k_i/\tau)}
                             {\exp(q_i^\top k_i/\tau) + \sum_{j=1}^{K} \exp(q_i^\top n_j/\tau)}, \qquad
        L = \frac{1}{N} \sum_{i=1}^{N} \ell_i

    A (K+1)-way cross-entropy whose class 0 is the positive; no gradient flows into the keys or
    the queue (MoCo's key encoder is updated by momentum, not by backprop).

    Args:
        q: (N, D) query projections (normalised here).
        k: (N, D) key projections, row-aligned with ``q`` (normalised here, detached).
        queue: (K, D) normalised negative keys.
        temperature: tau > 0 (MoCo v2: 0.2).

    Returns:
        Scalar loss tensor (float32 even under autocast).
    """
    if q.shape != k.shape or q.dim() != 2 or queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(
            f"need q, k of shape (N, D) and queue (K, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(queue.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.detach().float(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
    negative = q @ queue.detach().float().T  # (N, K)
    logits = torch.cat([positive, negative], dim=1) / temperature  # (N, 1+K)
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
