"""Self-supervised methods, each a small class around the shared :class:`~simclr_core.models.Encoder`.

:class:`Method` (``base.py``) is what the trainer asks of one; ``METHODS`` maps a method name to
its class, and the CLI's ``--method`` choices and the app's select box read it. Each class has:

- ``encoder``: the online :class:`Encoder` (what evaluation, embeddings and ``backbone.pt`` use);
- ``forward(view1, view2) -> loss`` for a batch of positive pairs;
- ``after_step(step, total_steps)``: what happens after each optimiser step (the momentum update);
- ``defaults``: the method's values for config fields left at "auto" (None), and ``head``, its
  paper's projection head (:mod:`simclr_core.resolve` fills them in);
- ``warnings(cfg, train_images)``: what a user should hear about these settings;
- ``from_config(cfg.method, encoder)``: the method with a run's settings;
- ``loss_name``: how the app labels its loss.
"""

from __future__ import annotations

from simclr_core.config import METHOD_NAMES, TrainConfig
from simclr_core.errors import UserError
from simclr_core.methods.base import Method
from simclr_core.methods.byol import BYOL
from simclr_core.methods.moco import MoCoV2
from simclr_core.methods.momentum import ema_update, momentum_at
from simclr_core.methods.simclr import SimCLR
from simclr_core.models import Encoder

# Typed by the protocol, so mypy checks every class against it.
METHODS: dict[str, type[Method]] = {"simclr": SimCLR, "moco_v2": MoCoV2, "byol": BYOL}
if tuple(METHODS) != METHOD_NAMES:  # the config's choices name exactly these methods
    raise ImportError(f"methods.METHODS {tuple(METHODS)} differ from config.METHOD_NAMES {METHOD_NAMES}")

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
]


def method_class(name: str) -> type[Method]:
    """The registered class of a method name, or a UserError listing the choices."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def build_method(cfg: TrainConfig, encoder: Encoder) -> Method:
    """The method ``cfg.method.name`` around ``encoder``, with the settings of a resolved config
    (:func:`simclr_core.resolve.resolve`)."""
    return method_class(cfg.method.name).from_config(cfg.method, encoder)
