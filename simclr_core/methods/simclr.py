"""SimCLR (Chen et al. 2020): encoder f, projection g, NT-Xent between the two views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from simclr_core import distributed
from simclr_core.config import resolved
from simclr_core.losses import nt_xent
from simclr_core.models import Encoder

if TYPE_CHECKING:
    from simclr_core.config import MethodConfig


class SimCLR(nn.Module):
    """SimCLR: both views through one encoder, every other image in the (global) batch a negative."""

    loss_name: ClassVar[str] = "NT-Xent loss"  # what the app titles its loss curve
    defaults: ClassVar[dict[str, Any]] = {"temperature": 0.5}  # the paper's CIFAR-10 value (appendix B.9)
    head: ClassVar[str] = "simclr"

    def __init__(self, encoder: Encoder, temperature: float = 0.5):
        super().__init__()
        self.encoder = encoder
        self.temperature = temperature

    @staticmethod
    def warnings(cfg: MethodConfig, train_images: int) -> list[str]:
        """Nothing about these settings needs saying."""
        return []

    @classmethod
    def from_config(cls, cfg: MethodConfig, encoder: Encoder) -> SimCLR:
        """SimCLR around ``encoder`` with ``cfg``'s temperature."""
        return cls(encoder, temperature=resolved(cfg.temperature, "temperature"))

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) x 2 -> scalar loss."""
        # One pass over both views: batch norm sees all 2B images, as in the paper's code.
        z1, z2 = self.encoder(torch.cat([view1, view2])).chunk(2)  # (B, D) each
        if distributed.world_size() == 1:
            return nt_xent(z1, z2, self.temperature)
        # Every rank's projections are negatives here too; gathered with gradient so that the
        # other ranks' anchors push on this rank's rows (the paper's cross-replica batch).
        everyone = distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)  # (R*B, D) each
        return nt_xent(z1, z2, self.temperature, candidates=everyone, offset=distributed.rank() * len(z1))

    def after_step(self, step: int, total_steps: int) -> None:
        """Nothing to update outside the optimiser."""
