"""Self-supervised methods, each a small class around the shared :class:`~simclr_core.models.Encoder`.

:class:`Method` (``base.py``) is what the trainer asks of one; ``METHODS`` maps a method name to
its class, and the CLI's ``--method`` choices and the app's select box read it. Each class has:

- ``encoder``: the online :class:`Encoder` (what evaluation, embeddings and ``backbone.pt`` use);
- ``forward(view1, view2) -> loss`` for a batch of positive pairs;
- ``after_step(step, total_steps)``: what happens after each optimiser step (the momentum update);
- ``defaults``: the method's values for config fields left at "auto" (None);
- ``from_config(cfg.method, encoder)``: the method with a run's settings;
- its own projection head, :func:`simclr_core.heads.default_head` (built into the encoder);
- ``loss_name``: how the app labels its loss.
"""

from __future__ import annotations

from simclr_core import heads
from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.methods.base import Method
from simclr_core.methods.byol import BYOL
from simclr_core.methods.moco import MoCoV2
from simclr_core.methods.momentum import ema_update, momentum_at
from simclr_core.methods.simclr import SimCLR
from simclr_core.models import Encoder

# Typed by the protocol, so mypy checks every class against it.
METHODS: dict[str, type[Method]] = {"simclr": SimCLR, "moco_v2": MoCoV2, "byol": BYOL}

__all__ = [
    "BYOL",
    "METHODS",
    "Method",
    "MoCoV2",
    "SimCLR",
    "build_method",
    "ema_update",
    "method_class",
    "momentum_at",
    "resolve_defaults",
]


def method_class(name: str) -> type[Method]:
    """The registered class of a method name, or a UserError listing the choices."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def resolve_defaults(cfg: TrainConfig) -> None:
    """Fill the config fields left at None with the chosen method's defaults (so config.json records them).

    The projection's hidden width stays None when not given: its default is a multiple of the
    backbone width (:mod:`simclr_core.heads`), which the checkpoint's ``arch`` records as None too.
    """
    for key, value in method_class(cfg.method.name).defaults.items():
        if getattr(cfg.method, key) is None:
            setattr(cfg.method, key, value)
    model = cfg.model
    head = model.head = model.head or heads.default_head(cfg.method.name)
    # the head's own output size and batch norm, resolved as models.architecture resolves them
    spec = heads.SPECS[heads.check_head(head)]
    if model.proj_out_dim is None:
        model.proj_out_dim = spec.out_dim
    if model.proj_bn is None:
        model.proj_bn = spec.bn


def build_method(cfg: TrainConfig, encoder: Encoder) -> Method:
    """The method ``cfg.method.name`` around ``encoder``, with the config's settings."""
    resolve_defaults(cfg)
    return method_class(cfg.method.name).from_config(cfg.method, encoder)
