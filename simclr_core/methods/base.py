"""What the trainer asks of a self-supervised method: the :class:`Method` protocol.

A method is an ``nn.Module`` around the shared :class:`~simclr_core.models.Encoder`, which the
trainer optimises, saves, wraps in DDP and compiles as one module. Beyond that the class owns every
fact about its method: its defaults for "auto" settings, its projection head, its warnings, how it is
built from a config, its loss and its step. Adding a method is a class with these, and a line in the registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import torch
from torch import nn

if TYPE_CHECKING:
    from simclr_core.config import MethodConfig
    from simclr_core.models import Encoder


class Method(Protocol):
    """A self-supervised method, as the trainer, checkpoints and the app use it."""

    loss_name: ClassVar[str]  # how the app titles its loss curve
    defaults: ClassVar[dict[str, Any]]  # its values for the method settings left at "auto" (None)
    head: ClassVar[str]  # its paper's projection head (simclr_core.heads.SPECS), when the config leaves it "auto"
    encoder: Encoder  # the online encoder: what evaluation, embeddings and backbone.pt use

    @staticmethod
    def warnings(cfg: MethodConfig, train_images: int) -> list[str]:
        """What a user should hear about these settings on ``train_images`` images (a run still starts)."""
        ...

    @classmethod
    def from_config(cls, cfg: MethodConfig, encoder: Encoder) -> Self:
        """The method around ``encoder`` with the settings of ``cfg`` (resolved: simclr_core.resolve)."""
        ...

    def __call__(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) x 2 -> scalar loss for a batch of positive pairs."""
        ...

    def after_step(self, step: int, total_steps: int) -> None:
        """What happens after each optimiser step (the momentum update of a target encoder)."""
        ...

    # The nn.Module surface the trainer relies on (every method is one).
    def train(self, mode: bool = True) -> Self: ...
    def state_dict(self) -> dict[str, Any]: ...
    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]: ...
    def named_buffers(self) -> Iterator[tuple[str, torch.Tensor]]: ...
    def to(self, *args: Any, **kwargs: Any) -> Self: ...


def as_module(method: Method) -> nn.Module:
    """The method as the ``nn.Module`` it also is: what the optimiser, DDP and checkpoints take.

    A protocol cannot say "and an nn.Module", so this says it once, and checks it.
    """
    if not isinstance(method, nn.Module):
        raise TypeError(f"{type(method).__name__} is not an nn.Module: a method must be one")
    return method
