"""BYOL (Grill et al. 2020): an online network with a predictor regresses an EMA target; no negatives."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from simclr_core.config import resolved
from simclr_core.heads import BYOLPredictionHead
from simclr_core.losses import byol_loss
from simclr_core.methods.momentum import ema_update, momentum_at
from simclr_core.models import Encoder

if TYPE_CHECKING:
    from simclr_core.config import MethodConfig


class BYOL(nn.Module):
    """Online encoder + predictor q, target encoder an EMA of the online one; symmetric loss.

    The encoder carries BYOL's projector (:class:`~simclr_core.heads.BYOLProjectionHead`, built
    from the config's ``head``); the predictor has its shape, z -> hidden -> z, with the
    projector's hidden width unless ``pred_hidden_dim`` is given. ``predictor=False`` leaves it out (the
    identity), the paper's ablation that collapses; the collapse alarm's tests run it on purpose.
    """

    loss_name: ClassVar[str] = "BYOL loss (normalised MSE)"  # what the app titles its loss curve
    # Base momentum raised to 1 along a cosine, as the paper. Its 0.996 is for ImageNet's ~300k
    # steps; CIFAR-sized runs use 0.99 (solo-learn, lightly), which lets the target follow sooner.
    defaults: ClassVar[dict[str, Any]] = {"ema": 0.99, "ema_schedule": "cosine"}
    head: ClassVar[str] = "byol"

    def __init__(
        self,
        encoder: Encoder,
        ema: float = 0.99,
        ema_schedule: str = "cosine",
        pred_hidden_dim: int | None = None,
        predictor: bool = True,
    ):
        super().__init__()
        self.encoder = encoder
        self.target = copy.deepcopy(encoder).requires_grad_(False)
        dim = encoder.out_dim
        # "the predictor q uses the same architecture as g": the projector's hidden width by default
        self.predictor: nn.Module = (
            BYOLPredictionHead(dim, pred_hidden_dim or encoder.hidden_dim, dim) if predictor else nn.Identity()
        )
        self.ema, self.ema_schedule = ema, ema_schedule

    @staticmethod
    def warnings(cfg: MethodConfig, train_images: int) -> list[str]:
        """A run without the predictor is a run meant to collapse."""
        if cfg.predictor:
            return []
        return [
            "--no-predictor: BYOL without its predictor collapses (Grill et al. 2020, table 5a); the collapse "
            "alarm will say so. Start a new run with --predictor to train for real"
        ]

    @classmethod
    def from_config(cls, cfg: MethodConfig, encoder: Encoder) -> BYOL:
        """BYOL around ``encoder`` with ``cfg``'s momentum and predictor width."""
        return cls(
            encoder,
            ema=resolved(cfg.ema, "ema"),
            ema_schedule=resolved(cfg.ema_schedule, "ema_schedule"),
            pred_hidden_dim=cfg.pred_hidden_dim,
            predictor=cfg.predictor,
        )

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) x 2 -> scalar loss, the sum over both view orders (0..8)."""
        p1, p2 = self.predictor(self.encoder(torch.cat([view1, view2]))).chunk(2)  # (B, D) each
        with torch.no_grad():
            t1, t2 = self.target(torch.cat([view1, view2])).chunk(2)
        return byol_loss(p1, t2) + byol_loss(p2, t1)

    def after_step(self, step: int, total_steps: int) -> None:
        """Move the target towards the online encoder."""
        ema_update(self.target, self.encoder, momentum_at(step, total_steps, self.ema, self.ema_schedule))
