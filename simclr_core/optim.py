"""Optimisers (SGD, LARS) with the paper's parameter groups, and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as SimCLR uses it: SGD with momentum and a layer-wise trust ratio.

    For a parameter p with gradient g: u = g + wd * p, then u *= eta * ||p|| / ||u|| (when both
    norms are non-zero), then the momentum buffer and step. Groups marked ``exclude=True``
    (biases and batch-norm) get neither weight decay nor the trust ratio, as in the paper.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1e-6, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, exclude=False))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - see torch.optim.Optimizer.step
        loss = closure() if closure is not None else None
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                u = p.grad
                if not g["exclude"]:
                    u = u.add(p, alpha=g["weight_decay"])
                    p_norm, u_norm = torch.norm(p), torch.norm(u)
                    # torch.where, not an if: no host sync on the GPU.
                    trust = torch.where(
                        (p_norm > 0) & (u_norm > 0), g["eta"] * p_norm / u_norm, torch.ones_like(p_norm)
                    )
                    u = u.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(u)
                p.add_(mu, alpha=-g["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (decayed) and biases / norm parameters (no decay, no LARS adaptation)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        dict(params=decay, weight_decay=weight_decay, exclude=False),
        dict(params=no_decay, weight_decay=0.0, exclude=True),
    ]


def build_optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float, fused: bool = False
) -> torch.optim.Optimizer:
    """``sgd`` or ``lars`` over :func:`param_groups`."""
    groups = param_groups(model, weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        for g in groups:
            g.pop("exclude")
        kw = {"fused": True} if fused else {}
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, **kw)
    raise ValueError(f"unknown optimizer {name!r}")


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to 0 at ``total_steps``.

    A pure function of the step, so resuming restores the schedule by restoring the step.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
