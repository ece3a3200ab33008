"""MoCo v2 (He et al. 2020; Chen, Fan, Girshick, He 2020): momentum key encoder and a queue of negatives."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from simclr_core import distributed
from simclr_core.config import resolved
from simclr_core.losses import info_nce
from simclr_core.methods.momentum import ema_update, momentum_at
from simclr_core.models import Encoder

if TYPE_CHECKING:
    from simclr_core.config import MethodConfig


class MoCoV2(nn.Module):
    """Query encoder trained by backprop, key encoder an EMA of it, negatives from a FIFO queue of keys.

    The query encoder is the shared :class:`Encoder` (backbone + the MLP head v2 adds,
    :class:`~simclr_core.heads.MoCoProjectionHead`); the key encoder is a copy updated only by
    :func:`ema_update`. The queue and its pointer are buffers, so they are in the state dict and a
    resumed run continues with the very same negatives.
    """

    loss_name: ClassVar[str] = "InfoNCE loss (queue negatives)"  # what the app titles its loss curve
    # m = 0.99 and K = 4096 as the MoCo authors' CIFAR-10 demo; tau = 0.2 as MoCo v2.
    defaults: ClassVar[dict[str, Any]] = {"temperature": 0.2, "ema": 0.99, "ema_schedule": "constant"}
    head: ClassVar[str] = "moco_v2"

    queue: torch.Tensor  # (K, D) buffer
    queue_ptr: torch.Tensor  # () long buffer

    def __init__(
        self,
        encoder: Encoder,
        temperature: float = 0.2,
        queue_size: int = 4096,
        ema: float = 0.99,
        ema_schedule: str = "constant",
        symmetric: bool = False,
        key_bn_splits: int = 8,
    ):
        super().__init__()
        self.encoder = encoder
        self.key_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.temperature, self.ema, self.ema_schedule = temperature, ema, ema_schedule
        self.symmetric, self.key_bn_splits = symmetric, key_bn_splits
        dim = encoder.out_dim
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))  # (K, D)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # next row to overwrite

    @staticmethod
    def warnings(cfg: MethodConfig, train_images: int) -> list[str]:
        """A queue longer than the data holds each image's own older keys as negatives."""
        if cfg.queue_size <= train_images:
            return []
        return [
            f"the MoCo queue (--queue-size {cfg.queue_size}) is larger than the {train_images} training images, "
            f"so it holds each image's own older keys as negatives; use a queue of at most {train_images}"
        ]

    @classmethod
    def from_config(cls, cfg: MethodConfig, encoder: Encoder) -> MoCoV2:
        """MoCo v2 around ``encoder`` with ``cfg``'s temperature, queue, momentum and shuffle-BN parts."""
        return cls(
            encoder,
            temperature=resolved(cfg.temperature, "temperature"),
            queue_size=cfg.queue_size,
            ema=resolved(cfg.ema, "ema"),
            ema_schedule=resolved(cfg.ema_schedule, "ema_schedule"),
            symmetric=cfg.moco_symmetric,
            key_bn_splits=cfg.key_bn_splits,
        )

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) x 2 -> scalar loss; enqueues this batch's keys (of every rank) afterwards."""
        queue = self.queue.clone()  # the loss must see the queue as it was, not after this step's enqueue
        if not self.symmetric:
            q = self.encoder(view1)  # (B, D)
            k = self._keys(view2)  # (B, D)
            loss = info_nce(q, k, queue, self.temperature)
        else:  # both directions, averaged; both views' keys are enqueued
            q1, q2 = self.encoder(torch.cat([view1, view2])).chunk(2)
            k1, k2 = self._keys(torch.cat([view1, view2])).chunk(2)
            loss = (info_nce(q1, k2, queue, self.temperature) + info_nce(q2, k1, queue, self.temperature)) / 2
            k = torch.cat([k1, k2])
        self._enqueue(k)
        return loss

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        """Key projections, normalised; batch norm runs on shuffled sub-batches.

        MoCo's "shuffle BN": if keys saw the same batch-norm statistics as their queries, the
        model could find the positive through them instead of through the image. The paper
        shuffles keys across GPUs; here the batch is shuffled and cut into ``key_bn_splits`` parts
        that each get their own statistics (as the authors' one-GPU CIFAR demo does).
        """
        splits = max(1, min(self.key_bn_splits, len(x) // 2))  # at least 2 images per batch-norm part
        perm = torch.randperm(len(x), device=x.device)
        k = torch.cat([self.key_encoder(part) for part in x[perm].tensor_split(splits)])
        out = torch.empty_like(k)
        out[perm] = k  # undo the shuffle
        return F.normalize(out.float(), dim=1)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """Write every rank's keys at the pointer, wrapping around the end of the queue."""
        keys = distributed.gather(keys.float())  # same queue on every rank
        size = len(self.queue)
        keys = keys[-size:]  # a batch larger than the queue keeps its newest keys
        rows = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        self.queue[rows] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)

    def after_step(self, step: int, total_steps: int) -> None:
        """Move the key encoder towards the query encoder."""
        ema_update(self.key_encoder, self.encoder, momentum_at(step, total_steps, self.ema, self.ema_schedule))
