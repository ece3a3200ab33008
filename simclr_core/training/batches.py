"""Batches of an epoch: a seeded order, each rank's slice, from the device or through DataLoader workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from simclr_core import distributed

if TYPE_CHECKING:
    from simclr_core.training.session import Session


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The image order of one epoch: a pure function of (seed, epoch), so a resume replays it."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class EpochBatches(torch.utils.data.Dataset):
    """This rank's part of batch i of an epoch's order, gathered from the (memory-mapped) uint8 images."""

    def __init__(
        self, images: torch.Tensor, order: torch.Tensor, batch_size: int, first: int, count: int, part: tuple[int, int]
    ):
        self.images, self.order, self.B, self.first, self.count = images, order, batch_size, first, count
        self.lo, self.hi = part

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> torch.Tensor:
        j = (self.first + i) * self.B
        return self.images[self.order[j + self.lo : j + self.hi]]


def batches(s: Session, epoch: int, first: int) -> Iterator[torch.Tensor]:
    """The epoch's batches from ``first`` on, as uint8 tensors on the device, in the order of :func:`epoch_order`.

    Images held on the device are indexed there; images left on the host (too big for the GPU) are
    gathered by DataLoader workers into pinned memory, overlapping the copy with the step. With R
    ranks each takes rows [r*B/R, (r+1)*B/R) of every global batch: the same images in the same
    order whatever R is, which is what lets a run resume on another number of GPUs.
    """
    B, n = s.batch_size, s.steps_per_epoch
    per_rank = B // distributed.world_size()
    lo = distributed.rank() * per_rank
    hi = lo + per_rank
    order = epoch_order(len(s.images), s.cfg.run.seed, epoch)
    if not s.workers:
        order = order.to(s.images.device)
        for i in range(first, n):
            yield s.images[order[i * B + lo : i * B + hi]].to(s.device, non_blocking=True)
        return
    loader = torch.utils.data.DataLoader(
        EpochBatches(s.images, order, B, first, n - first, (lo, hi)),
        batch_size=None,
        num_workers=s.workers,
        pin_memory=s.device.type == "cuda",
    )
    for x in loader:
        yield x.to(s.device, non_blocking=True)
