"""Evaluation of frozen representations: weighted kNN classifier and linear probe.

Pure functions on feature tensors (CPU or CUDA); no models, data loaders or files here.
Labels are int64 with -1 meaning "unlabelled"; the user-facing entry points drop such rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simclr_core.errors import UserError

__all__ = ["knn_predict", "topk_accuracy", "knn_classify", "knn_accuracy", "linear_probe", "confusion_matrix"]

_NO_LABELS = "{} has no labels: kNN and the linear probe need a labelled split (class sub-folders)"


def _check_pair(x: Tensor, y: Tensor, name: str) -> None:
    """Raise ValueError unless x is a non-empty (N, D) matrix and y holds N labels."""
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} features must be a non-empty (N, D) matrix, got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{name} labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")


def _labelled(x: Tensor, y: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Drop rows labelled -1; UserError if nothing is left (the user picked an unlabelled split)."""
    y = y.to(device=x.device, dtype=torch.long)
    if bool((y < -1).any()):
        raise ValueError(f"{name} labels must be >= -1 (-1 = unlabelled)")
    keep = y >= 0
    if not bool(keep.any()):
        raise UserError(_NO_LABELS.format(name))
    return x[keep], y[keep]


@torch.no_grad()
def knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> Tensor:
    """Weighted kNN class scores (Wu et al. 2018), as used by SimCLR/MoCo monitors.

    Args:
        query: (Q, D) features to classify; moved to ``bank``'s device if needed.
        bank: (N, D) reference features.
        bank_labels: (N,) int labels in ``[0, num_classes)``.
        num_classes: Number of classes C.
        k: Neighbours per query, clamped to N.
        temperature: Each neighbour votes with weight ``exp(cosine_sim / temperature)``.
        chunk_size: Query rows per step; bounds memory to O(chunk_size * N).

    Returns:
        (Q, C) scores on ``bank``'s device.
    """
    _check_pair(bank, bank_labels, "bank")
    if query.dim() != 2 or query.shape[0] == 0 or query.shape[1] != bank.shape[1]:
        raise ValueError(f"query must be a non-empty (Q, {bank.shape[1]}) matrix, got {tuple(query.shape)}")
    if k < 1 or chunk_size < 1 or temperature <= 0 or num_classes < 1:
        raise ValueError("k, chunk_size, temperature and num_classes must be positive")
    labels = bank_labels.to(device=bank.device, dtype=torch.long)
    if bool((labels < 0).any()) or bool((labels >= num_classes).any()):
        raise ValueError(f"bank_labels must lie in [0, {num_classes})")
    # Half-precision features (AMP embeddings) are upcast: exp(sim / T) needs the range.
    dtype = torch.promote_types(torch.promote_types(query.dtype, bank.dtype), torch.float32)
    bank_n = F.normalize(bank.to(dtype), dim=1)
    query = query.to(device=bank.device)
    k = min(k, bank.shape[0])
    out = []
    for start in range(0, query.shape[0], chunk_size):
        q = F.normalize(query[start : start + chunk_size].to(dtype), dim=1)
        sim, idx = (q @ bank_n.T).topk(k, dim=1)
        scores = torch.zeros(q.shape[0], num_classes, dtype=dtype, device=bank.device)
        out.append(scores.scatter_add_(1, labels[idx], (sim / temperature).exp()))
    return torch.cat(out)


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction (0..1) of rows whose label is among the k highest scores.

    Args:
        scores: (N, C) class scores or logits.
        labels: (N,) true labels.
        ks: Values of k; each is clamped to C (so k >= C always gives 1.0 for valid labels).

    Returns:
        ``{k: accuracy}`` keyed by the requested k.
    """
    _check_pair(scores, labels, "scores")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be non-empty positive integers, got {ks}")
    labels = labels.to(device=scores.device, dtype=torch.long)
    # One topk at the largest k; smaller k are its prefixes.
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    # Count then divide in Python: exact fractions, not float32 means.
    n = labels.shape[0]
    return {k: hit[:, : min(k, scores.shape[1])].any(dim=1).sum().item() / n for k in ks}


def knn_classify(
    bank: Tensor, bank_labels: Tensor, query: Tensor, query_labels: Tensor, *, k: int = 200, temperature: float = 0.1
) -> tuple[Tensor, Tensor]:
    """kNN class scores of the labelled query rows against the labelled bank rows (rows labelled -1 dropped).

    Returns:
        (scores (Q', C), the kept query labels (Q',)).

    Raises:
        UserError: If bank or query has no labelled rows.
    """
    _check_pair(bank, bank_labels, "bank")
    _check_pair(query, query_labels, "query")
    bank, bank_labels = _labelled(bank, bank_labels, "The kNN bank (train split)")
    query, query_labels = _labelled(query, query_labels, "The kNN query (test split)")
    num_classes = int(max(bank_labels.max().item(), query_labels.max().item())) + 1
    return knn_predict(query, bank, bank_labels, num_classes, k=k, temperature=temperature), query_labels


def knn_accuracy(
    bank: Tensor, bank_labels: Tensor, query: Tensor, query_labels: Tensor, *, k: int = 200, temperature: float = 0.1
) -> dict[str, float]:
    """kNN top-1/top-5 accuracy of ``query`` against ``bank``, ignoring rows labelled -1.

    Returns:
        ``{"knn_top1": .., "knn_top5": ..}`` in percent (0..100).

    Raises:
        UserError: If bank or query has no labelled rows.
    """
    scores, labels = knn_classify(bank, bank_labels, query, query_labels, k=k, temperature=temperature)
    acc = topk_accuracy(scores, labels, (1, 5))
    return {"knn_top1": 100.0 * acc[1], "knn_top5": 100.0 * acc[5]}


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 1e-6,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, float]:
    """Logistic regression on frozen features, ignoring rows labelled -1.

    Features are standardised with the train mean/std; a single ``nn.Linear`` (zero-initialised, so the
    only randomness is the seeded shuffle) is trained with SGD (momentum 0.9, Nesterov) and a per-step
    cosine schedule. Deterministic on CPU for a given seed; the global RNG is untouched.

    Args:
        device: Where to train; defaults to ``train_x``'s device.
        progress: Called after every epoch with (epochs done, epochs, that epoch's mean train loss).

    Returns:
        ``{"probe_top1", "probe_top5", "probe_train_top1"}`` in percent (0..100).

    Raises:
        UserError: If the train or test split has no labelled rows.
    """
    _check_pair(train_x, train_y, "train")
    _check_pair(test_x, test_y, "test")
    if test_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"train/test feature dims differ: {train_x.shape[1]} vs {test_x.shape[1]}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError("epochs, batch_size and lr must be positive")
    dev = torch.device(device) if device is not None else train_x.device
    # Callers often embed under inference_mode/no_grad; training needs autograd on fresh tensors.
    with torch.inference_mode(False), torch.enable_grad():
        train_x, train_y = _labelled(train_x.detach().to(dev), train_y, "The train split")
        test_x, test_y = _labelled(test_x.detach().to(dev), test_y, "The test split")
        train_x, test_x = train_x.float(), test_x.float()
        mean, std = train_x.mean(0), train_x.std(0, unbiased=False)
        # Constant features would blow up test rows when divided by ~0; leave them unscaled.
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
        num_classes = int(max(train_y.max().item(), test_y.max().item())) + 1

        model = nn.Linear(train_x.shape[1], num_classes).to(dev)
        nn.init.zeros_(model.weight)  # convex problem: zero init loses nothing and needs no RNG
        nn.init.zeros_(model.bias)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
        n = train_x.shape[0]
        steps = epochs * math.ceil(n / batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        gen = torch.Generator().manual_seed(seed)  # CPU generator: same shuffle on every device
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=gen).to(dev)
            summed = torch.zeros((), device=dev)  # summed on the device: one sync per epoch, not per step
            for start in range(0, n, batch_size):
                idx = perm[start : start + batch_size]
                loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                summed += loss.detach() * len(idx)
            if progress is not None:
                progress(epoch + 1, epochs, summed.item() / n)
        with torch.no_grad():
            test_acc = topk_accuracy(model(test_x), test_y, (1, 5))
            train_acc = topk_accuracy(model(train_x), train_y, (1,))
    return {
        "probe_top1": 100.0 * test_acc[1],
        "probe_top5": 100.0 * test_acc[5],
        "probe_train_top1": 100.0 * train_acc[1],
    }


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(C, C) int64 counts on ``labels``' device; rows = true class, columns = predicted class."""
    if pred.dim() != 1 or pred.shape != labels.shape or pred.numel() == 0:
        raise ValueError(
            f"pred and labels must be equal-length non-empty vectors, got {tuple(pred.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.long()
    pred = pred.to(labels.device).long()
    for t, name in ((pred, "pred"), (labels, "labels")):
        if bool((t < 0).any()) or bool((t >= num_classes).any()):
            raise ValueError(f"{name} must lie in [0, {num_classes})")
    # Flatten (true, pred) pairs to one index so a single bincount does the counting.
    return torch.bincount(labels * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)
