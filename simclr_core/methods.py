"""Self-supervised methods, each a small module around the shared :class:`~simclr_core.models.Encoder`.

``METHODS`` maps a method name to its class; the CLI's ``--method`` choices and the app's
select box read it. MoCo v2 and BYOL join as siblings with the same constructor and
``forward(view1, view2) -> loss``.
"""

from __future__ import annotations

import torch
from torch import nn

from simclr_core.losses import nt_xent
from simclr_core.models import Encoder


class SimCLR(nn.Module):
    """SimCLR (Chen et al. 2020): encoder f, projection g, NT-Xent between the two views."""

    def __init__(self, encoder: Encoder, temperature: float = 0.5):
        super().__init__()
        self.encoder = encoder
        self.temperature = temperature

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) x 2 -> scalar loss."""
        # One pass over both views: batch norm sees all 2B images, as in the paper's code.
        z1, z2 = self.encoder(torch.cat([view1, view2])).chunk(2)  # (B, D) each
        return nt_xent(z1, z2, self.temperature)


METHODS: dict[str, type[nn.Module]] = {"simclr": SimCLR}
