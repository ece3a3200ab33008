"""Self-supervised losses, one per file: SimCLR's NT-Xent, MoCo's InfoNCE, BYOL's regression."""

from simclr_core.losses.byol import byol_loss
from simclr_core.losses.info_nce import info_nce
from simclr_core.losses.nt_xent import nt_xent

__all__ = ["byol_loss", "info_nce", "nt_xent"]
