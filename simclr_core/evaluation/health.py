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
- :func:`areq`: α-ReQ (Agrawal et al., NeurIPS 2022), the power-law decay exponent of the
  covariance's eigenvalue spectrum.
- :func:`lidar`: LiDAR (Thilak et al., ICLR 2024), the effective rank of the linear discriminant matrix
  whose classes are source images and whose samples are augmented views of them.
- :func:`pseudo_knn`: cluster learnability, the "CL" of CLID (Lu et al. 2023): the leave-one-out kNN
  accuracy of k-means pseudo-labels.
- :func:`collapse_alarm`: a message when these say the encoder has collapsed, else None; with
  :func:`likely_causes` of the run's settings (BYOL without its predictor, no momentum, a temperature or a
  learning rate far from its method's usual) it names the cause and the flags that undo it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from simclr_core.explorer.scores import kmeans_clusters

if TYPE_CHECKING:
    from simclr_core.config import TrainConfig

__all__ = [
    "COLLAPSED_RANK",
    "Cause",
    "alignment",
    "areq",
    "collapse_alarm",
    "explain",
    "health",
    "lidar",
    "likely_causes",
    "pseudo_knn",
    "rankme",
    "uniformity",
]

COLLAPSED_RANK = 2.0  # below this effective rank, all embeddings lie (nearly) on one line
COLLAPSED_UNIFORMITY = -0.05  # above this, all normalised embeddings sit (nearly) on one point


@torch.no_grad()
def rankme(x: torch.Tensor, eps: float = 1e-7) -> float:
    """Effective rank of (N, D) embeddings, in [1, min(N, D)]; RankMe's eps guards log(0)."""
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"rankme needs a non-empty (N, D) matrix, got {tuple(x.shape)}")
    return _entropy_rank(torch.linalg.svdvals(x.double()), eps)


def _entropy_rank(values: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe's effective rank of non-negative values: exp of the entropy of values / sum (+ eps)."""
    values = values.double().clamp_min(0)  # eigvalsh rounds a zero eigenvalue to a tiny negative one
    if float(values.sum()) == 0.0:
        return 1.0  # all zeros: one point, rank 1 by the same reading
    p = values / values.sum() + eps
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


AREQ_RTOL = 1e-6  # eigenvalues below this fraction of the largest are round-off or a dead direction, not spectrum


@torch.no_grad()
def areq(x: torch.Tensor, rtol: float = AREQ_RTOL) -> float:
    """α-ReQ of (N, D) embeddings: the decay exponent α of the covariance's eigenvalues, λ_i ∝ i^-α.

    Agrawal et al. 2022, "α-ReQ: Assessing representation quality in self-supervised learning by
    measuring eigenspectrum decay": "the eigenspectrum of the empirical feature covariance can be well
    approximated with the family of power-law distribution ... the decay coefficient α serves as a
    measure of representation quality"; α near 1 goes with good linear readout, α near 0 with white
    (noise-like) features, a large α with a few dominant directions.

    The fit: least squares of log λ_i on log i over i = 1..K, where K counts the eigenvalues of the
    (float64, centred, 1/(N-1)) covariance above ``rtol`` x λ_1; K <= min(N - 1, D), the rank a sample
    covariance can have. A rank-deficient matrix is thus fitted over its non-zero spectrum only (the
    known blind spot of α-ReQ: a flat low-rank spectrum reads as small α). NaN when K < 2 (collapsed:
    no spectrum to fit).
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"areq needs an (N, D) matrix with N >= 2, got {tuple(x.shape)}")
    x = x.double()
    x = x - x.mean(0)
    lam = torch.linalg.eigvalsh(x.T @ x / (x.shape[0] - 1) if x.shape[1] <= x.shape[0] else x @ x.T / (x.shape[0] - 1))
    lam = lam.flip(0)  # descending; the Gram matrix shares the covariance's non-zero eigenvalues
    if float(lam[0]) <= 0:
        return math.nan
    lam = lam[: min(x.shape[0] - 1, x.shape[1])]
    lam = lam[lam > rtol * lam[0]]
    if len(lam) < 2:
        return math.nan
    log_i = torch.log(torch.arange(1, len(lam) + 1, dtype=torch.float64))
    log_l = lam.log()
    slope = ((log_i - log_i.mean()) * (log_l - log_l.mean())).sum() / ((log_i - log_i.mean()) ** 2).sum()
    return float(-slope)


@torch.no_grad()
def lidar(views: torch.Tensor, delta: float = 1e-6, eps: float = 1e-7) -> float:
    """LiDAR of (n, q, D) embeddings: q augmented views of each of n source images; in [1, min(n - 1, D)].

    Thilak et al. 2024, "LiDAR: Sensing linear probing performance in joint embedding SSL
    architectures": each source image is a class of the LDA and its views are the class's samples;
    Σ_b is the covariance of the class means, Σ_w the mean within-class covariance plus δI, and LiDAR
    is the effective rank (RankMe's entropy formula, with its ε) of Σ_w^{-1/2} Σ_b Σ_w^{-1/2}. High
    when the images differ in many directions that their views agree on; low when the views' spread
    swamps the differences between images in all but a few directions. As in the paper, Σ_b is not
    corrected for the views' own spread, so every direction keeps a floor of about 1/q: noise views
    (independent of the image) read as flat, like white noise for RankMe, and more views lower the floor.

    δ here is ``delta`` times the mean within-class variance (tr Σ_w / D), where the paper adds a fixed
    small δ to its features: LDA is scale-free, and so the measure stays comparable between a backbone
    h of large norm and a projection z of small norm. δ only keeps Σ_w invertible; it should stay well
    below the smallest real within-class variance, so n (q - 1) >= D views are needed for a Σ_w of full
    rank. Computed in float64.
    """
    if views.dim() != 3 or views.shape[0] < 2 or views.shape[1] < 2:
        raise ValueError(f"lidar needs (n >= 2 images, q >= 2 views, D) embeddings, got {tuple(views.shape)}")
    e = views.double()
    n, q, d = e.shape
    means = e.mean(1)  # (n, D) class means
    cb = means - means.mean(0)
    sigma_b = cb.T @ cb / (n - 1)
    cw = (e - means[:, None]).reshape(n * q, d)
    sigma_w = cw.T @ cw / (n * (q - 1))
    scale = float(sigma_w.trace()) / d or float(sigma_b.trace()) / d or 1.0  # views all equal: δ on Σ_b's scale
    w_val, w_vec = torch.linalg.eigh(sigma_w + delta * scale * torch.eye(d, dtype=torch.float64))
    w_isqrt = (w_vec * w_val.clamp_min(1e-300).rsqrt()) @ w_vec.T
    return _entropy_rank(torch.linalg.eigvalsh(w_isqrt @ sigma_b @ w_isqrt), eps)


@torch.no_grad()
def pseudo_knn(x: torch.Tensor, clusters: int = 10, k: int = 10, seed: int = 0) -> float:
    """Cluster learnability of (N, D) embeddings, in [0, 1]: how well a kNN recovers their own k-means clusters.

    Lu et al. 2023, "Using representation expressiveness and learnability to evaluate self-supervised
    learning methods" (CLID): "CL is measured in terms of the performance of a KNN classifier trained
    to predict labels obtained by clustering the representations with K-means". Here: k-means with
    ``clusters`` centres (the explorer's :func:`~simclr_core.explorer.scores.kmeans_clusters`, seeded
    with ``seed``) on the L2-normalised embeddings, then the leave-one-out accuracy of a majority vote
    of the ``k`` nearest other embeddings (cosine; ties to the lower label). Near 1 for well separated
    clusters; for structureless noise it falls towards chance (1 / clusters), though k-means' own cells
    keep it above. 1.0 when all rows are equal (one cluster: read with RankMe, which says collapsed).
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"pseudo_knn needs an (N, D) matrix with N >= 2, got {tuple(x.shape)}")
    u = F.normalize(x.float(), dim=1)
    clusters, k = max(1, min(clusters, len(u))), max(1, min(k, len(u) - 1))
    with warnings.catch_warnings():  # collapsed embeddings give fewer distinct clusters: that is the reading
        warnings.simplefilter("ignore")
        labels = torch.from_numpy(kmeans_clusters(u.numpy(), clusters, seed=seed)).long()
    sim = u @ u.T
    sim.fill_diagonal_(-math.inf)  # leave one out: a point is never its own neighbour
    nb = sim.topk(k, dim=1).indices  # (N, k); topk breaks ties by index, so the result is deterministic
    votes = torch.zeros(len(u), clusters).scatter_add_(1, labels[nb], torch.ones(nb.shape))
    return float((votes.argmax(1) == labels).float().mean())


@dataclass(frozen=True)
class Cause:
    """A setting that likely made a run collapse or diverge, and the flags that undo it."""

    what: str  # the setting, and how far it is from its method's usual
    fix: str  # command-line flags that undo it
    resumable: bool  # the fix may be passed with --resume (simclr_core.cli.train.RESUMABLE); else a new run


TEMPERATURE_FLOOR = 0.05  # at or below: the softmax is nearly a hard max, one negative takes the whole gradient
LR_FAR_ABOVE = 4  # times the linear-scaling rate (config.LR_PER_256): beyond it steps overshoot, not learn
EMA_FLOOR = 0.1  # below: the target/key encoder is (nearly) the online one; m = 0 fails in BYOL's and MoCo's papers


def likely_causes(cfg: TrainConfig) -> list[Cause]:
    """The settings of ``cfg`` (resolved, or as given) that are known to collapse or blow up a run, most
    likely first; [] when none is far from its method's usual.

    - BYOL without its predictor: "removing the predictor ... leads to a collapsed representation"
      (Grill et al. 2020, table 5a);
    - a momentum ``--ema`` below :data:`EMA_FLOOR` for BYOL or MoCo v2 (BYOL at tau = 0: 0.3% top-1, its
      table 5a; MoCo at m = 0: "the training loss oscillates and fails to converge", He et al. 2020);
    - a ``--temperature`` at or below :data:`TEMPERATURE_FLOOR` for SimCLR or MoCo v2;
    - an ``--lr`` above :data:`LR_FAR_ABOVE` times the linear-scaling rate of its optimiser and batch.
    """
    from simclr_core.methods import method_class  # the methods' own defaults; methods import the config

    m, o = cfg.method, cfg.optim
    usual = method_class(m.name).defaults
    causes = []
    if m.name == "byol" and not m.predictor:
        causes.append(
            Cause(
                "BYOL without its predictor (--no-predictor), which collapses (Grill et al. 2020, table 5a)",
                "--predictor",
                resumable=False,
            )
        )
    if "ema" in usual and m.ema is not None and m.ema < EMA_FLOOR:
        causes.append(
            Cause(
                f"--ema {m.ema:g}: the {'target' if m.name == 'byol' else 'key'} encoder follows the online one "
                f"with next to no momentum (usual: {usual['ema']:g})",
                f"--ema {usual['ema']:g}",
                resumable=False,
            )
        )
    if "temperature" in usual and m.temperature is not None and m.temperature <= TEMPERATURE_FLOOR:
        causes.append(
            Cause(
                f"--temperature {m.temperature:g} is far below {m.name}'s usual {usual['temperature']:g}",
                f"--temperature {usual['temperature']:g}",
                resumable=True,
            )
        )
    if o.lr is not None and o.batch_size is not None and o.lr > LR_FAR_ABOVE * o.default_lr():
        # halving a wild --lr takes a resume per halving (twenty from 1e6): go back to the recipe's rate at once
        causes.append(
            Cause(
                f"--lr {o.lr:g} is {o.lr / o.default_lr():,.0f}x the usual {o.default_lr():.3g} for {o.optimizer} "
                f"at batch {o.batch_size}",
                f"--lr {o.default_lr():.3g}",
                resumable=True,
            )
        )
    return causes


def explain(causes: Sequence[Cause], run: str | None = None) -> str:
    """``causes`` (not empty) in a sentence that names the fix: "likely cause: ...; resume with --resume RUN
    --temperature 0.5", or "...; start a new run with --predictor" when a fix cannot be resumed."""
    why = "; ".join(c.what for c in causes)
    flags = " ".join(c.fix for c in causes)
    if all(c.resumable for c in causes):
        return f"likely cause: {why}; resume with {f'--resume {run} ' if run else ''}{flags}"
    return f"likely cause: {why}; start a new run with {flags}"


def collapse_alarm(
    rank: float, unif: float | None = None, causes: Sequence[Cause] = (), run: str | None = None
) -> str | None:
    """Why the representation looks collapsed, or None when it does not; ``causes`` (:func:`likely_causes`
    of the run's settings) replace the general advice with the likely cause and its fix (:func:`explain`)."""
    if rank < COLLAPSED_RANK:
        finding = (
            f"the representation has collapsed: its effective rank is {rank:.2f}, so every image maps to "
            "(nearly) the same direction"
        )
        advice = "Lower the learning rate or raise the temperature, and check the views are not too weak"
    elif unif is not None and unif > COLLAPSED_UNIFORMITY:
        finding = f"the representation has collapsed: uniformity is {unif:.3f} (0 means one point for every image)"
        advice = "Lower the learning rate or raise the temperature"
    else:
        return None
    return f"{finding}. {explain(causes, run) if causes else advice}"


def health(
    h: torch.Tensor,
    z: torch.Tensor,
    z1: torch.Tensor,
    z2: torch.Tensor,
    views_h: torch.Tensor | None = None,
    views_z: torch.Tensor | None = None,
) -> dict[str, float | str]:
    """The metrics line of one probe: each label-free signal, for the backbone h and the projection z.

    Args:
        h, z: (N, F) and (N, D) embeddings of the probe images.
        z1, z2: (N, D) projections of two views of them (alignment).
        views_h, views_z: (n, q, F) and (n, q, D) embeddings of q views of n of them (LiDAR), or None.

    Returns keys ``rankme_h``, ``rankme_z``, ``alignment``, ``uniformity``, ``areq_h``, ``areq_z``,
    ``pseudo_knn_h``, ``pseudo_knn_z``, ``lidar_h`` and ``lidar_z`` (with views) and, when collapsed,
    ``collapse`` (the alarm's message). A signal that is undefined (α-ReQ of a collapsed matrix) is left
    out, so metrics.jsonl keeps to strict JSON.
    """
    out: dict[str, float | str] = {
        "rankme_h": rankme(h),
        "rankme_z": rankme(z),
        "alignment": alignment(z1, z2),
        "uniformity": uniformity(z),
    }
    signals = {"areq_h": areq(h), "areq_z": areq(z), "pseudo_knn_h": pseudo_knn(h), "pseudo_knn_z": pseudo_knn(z)}
    if views_h is not None and views_z is not None:
        signals.update(lidar_h=lidar(views_h), lidar_z=lidar(views_z))
    out.update({k: v for k, v in signals.items() if math.isfinite(v)})
    alarm = collapse_alarm(min(float(out["rankme_h"]), float(out["rankme_z"])), float(out["uniformity"]))
    if alarm:
        out["collapse"] = alarm
    return out
