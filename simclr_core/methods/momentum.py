"""The momentum (EMA) update shared by MoCo's key encoder and BYOL's target network."""

from __future__ import annotations

import math

import torch
from torch import nn

SCHEDULES = ("constant", "cosine")


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    r"""In place, for every parameter: :math:`\theta_t \leftarrow m\,\theta_t + (1 - m)\,\theta_o`.

    Buffers (batch-norm running statistics) are left alone: the target keeps its own, as in the
    MoCo and BYOL code. ``target`` and ``online`` must have the same architecture.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    t: list[torch.Tensor] = list(target.parameters())
    o = list(online.parameters())
    if len(t) != len(o):
        raise ValueError("target and online modules have different parameters")
    # lerp(t, o, w) = t + w (o - t) = (1 - w) t + w o, with w = 1 - m; one fused kernel per device.
    torch._foreach_lerp_(t, [p.detach() for p in o], 1.0 - momentum)


def momentum_at(step: int, total_steps: int, base: float, schedule: str = "constant") -> float:
    r"""The EMA momentum after ``step`` of ``total_steps`` steps.

    ``cosine`` is BYOL's schedule (Grill et al. 2020, sec. 3.2), rising from ``base`` to 1:
    :math:`m_k = 1 - (1 - m_{base})\,(\cos(\pi k / K) + 1) / 2`.
    """
    if schedule == "constant":
        return base
    if schedule != "cosine":
        raise ValueError(f"unknown momentum schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    k = min(max(step, 0), total_steps) / max(total_steps, 1)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * k) + 1.0) / 2.0
