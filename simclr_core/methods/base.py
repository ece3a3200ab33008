"""What the trainer asks of a self-supervised method: the :class:`Method` protocol.

A method is an ``nn.Module`` around the shared :class:`~simclr_core.models.Encoder`, which the
trainer optimises, saves, wraps in DDP and compiles as one module. Beyond that it needs five things,
and nothing else about any method: so adding one is a class with these, and a line in the registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, TypeVar

import torch
from torch import nn

if TYPE_CHECKING:
    from simclr_core.config import MethodConfig
    from simclr_core.models import Encoder

T = TypeVar("T")


class Method(Protocol):
    """A self-supervised method, as the trainer, checkpoints and the app use it."""

    loss_name: ClassVar[str]  # how the app titles its loss curve
    defaults: ClassVar[dict[str, Any]]  # its values for the method settings left at "auto" (None)
    encoder: Encoder  # the online encoder: what evaluation, embeddings and backbone.pt use

    @classmethod
    def from_config(cls, cfg: MethodConfig, encoder: Encoder) -> Self:
        """The method around ``encoder`` with the settings of ``cfg`` (defaults already resolved)."""
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


def resolved(value: T | None, name: str) -> T:
    """A setting that :func:`~simclr_core.methods.resolve_defaults` has filled."""
    if value is None:
        raise ValueError(f"{name} is unset: resolve_defaults fills it before a method is built")
    return value
