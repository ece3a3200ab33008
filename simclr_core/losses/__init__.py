"""Contrastive losses, one per file (MoCo's InfoNCE and BYOL's regression join later)."""

from simclr_core.losses.nt_xent import nt_xent

__all__ = ["nt_xent"]
