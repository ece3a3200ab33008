"""Is the representation healthy? Measures that need no labels, for folders without classes.

- :func:`rankme`: the effective rank of a batch of embeddings (Garrido et al. 2023, "RankMe:
  Assessing the downstream performance of pretrained self-supervised representations by their
  rank"): exp of the entropy of the normalised singular values. 1 when every image maps to the
  same direction, close to the dimension when the embeddings fill the space evenly.
- :func:`alignment` and :func:`uniformity` (Wang & Isola 2020, "Understanding contrastive
  representation learning through alignment and uniformity on the hypersphere"), on L2-normalised
  embeddings: alignment E||f(x) - f(x+)||^2 over positive pairs (lower is better; 0 for identical
  views), uniformity log E exp(-2 ||f(x) - f(y)||^2) over all pairs (lower is better; 0 means
  every image sits on the same point).
- :func:`collapse_alarm`: a message when these say the encoder has collapsed, else None.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["COLLAPSED_RANK", "alignment", "collapse_alarm", "health", "rankme", "uniformity"]

COLLAPSED_RANK = 2.0  # below this effective rank, all embeddings lie (nearly) on one line
COLLAPSED_UNIFORMITY = -0.05  # above this, all normalised embeddings sit (nearly) on one point


@torch.no_grad()
def rankme(x: torch.Tensor, eps: float = 1e-7) -> float:
    """Effective rank of (N, D) embeddings, in [1, min(N, D)]; RankMe's eps guards log(0)."""
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"rankme needs a non-empty (N, D) matrix, got {tuple(x.shape)}")
    s = torch.linalg.svdvals(x.double())
    if float(s.sum()) == 0.0:
        return 1.0  # all zeros: one point, rank 1 by the same reading
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> float:
    """Mean ||z1_i - z2_i||^alpha of the normalised embeddings of two views of the same images (0 .. 2^alpha)."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"two views must be equal (N, D) matrices, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    a, b = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    return float((a - b).norm(dim=1).pow(alpha).mean())


@torch.no_grad()
def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log of the mean Gaussian potential exp(-t ||z_i - z_j||^2) over pairs i < j (in [-4t, 0])."""
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"uniformity needs at least 2 embeddings, got shape {tuple(z.shape)}")
    u = F.normalize(z.float(), dim=1)
    sq = torch.pdist(u).pow(2)  # (N(N-1)/2,)
    return float(torch.logsumexp(-t * sq.double(), dim=0) - torch.log(torch.tensor(float(sq.numel()))))


def collapse_alarm(rank: float, unif: float | None = None) -> str | None:
    """Why the representation looks collapsed, or None when it does not."""
    if rank < COLLAPSED_RANK:
        return (
            f"the representation has collapsed: its effective rank is {rank:.2f}, so every image maps to "
            "(nearly) the same direction. Lower the learning rate or raise the temperature, and check the "
            "views are not too weak"
        )
    if unif is not None and unif > COLLAPSED_UNIFORMITY:
        return (
            f"the representation has collapsed: uniformity is {unif:.3f} (0 means one point for every image). "
            "Lower the learning rate or raise the temperature"
        )
    return None


def health(h: torch.Tensor, z: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, float | str]:
    """The metrics line of one probe: RankMe of h and z, alignment of the two views' z, uniformity of z.

    Returns keys ``rankme_h``, ``rankme_z``, ``alignment``, ``uniformity`` and, when collapsed,
    ``collapse`` (the alarm's message).
    """
    out: dict[str, float | str] = {
        "rankme_h": rankme(h),
        "rankme_z": rankme(z),
        "alignment": alignment(z1, z2),
        "uniformity": uniformity(z),
    }
    alarm = collapse_alarm(min(float(out["rankme_h"]), float(out["rankme_z"])), float(out["uniformity"]))
    if alarm:
        out["collapse"] = alarm
    return out
