"""Self-supervised methods, each a small module around the shared :class:`~simclr_core.models.Encoder`.

``METHODS`` maps a method name to its class; the CLI's ``--method`` choices and the app's
select box read it. Every method has the same shape:

- ``encoder``: the online :class:`Encoder` (what evaluation, embeddings and ``backbone.pt`` use);
- ``forward(view1, view2) -> loss`` for a batch of positive pairs;
- ``after_step(step, total_steps)``: what happens after each optimiser step (the momentum update);
- ``defaults``: the method's values for config fields left at "auto" (None);
- its own projection head, :func:`simclr_core.heads.default_head` (built into the encoder);
- ``loss_name``: how the app labels its loss.
"""

from __future__ import annotations

from typing import TypeVar

from simclr_core import heads
from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.methods.byol import BYOL
from simclr_core.methods.moco import MoCoV2
from simclr_core.methods.momentum import ema_update, momentum_at
from simclr_core.methods.simclr import SimCLR
from simclr_core.models import Encoder

# A method module (an nn.Module with the shape the module docstring describes).
Method = SimCLR | MoCoV2 | BYOL

METHODS: dict[str, type[Method]] = {"simclr": SimCLR, "moco_v2": MoCoV2, "byol": BYOL}

__all__ = ["BYOL", "METHODS", "Method", "MoCoV2", "SimCLR", "build_method", "ema_update", "momentum_at",
           "resolve_defaults"]

T = TypeVar("T")


def _resolved(value: T | None, name: str) -> T:
    """A setting that :func:`resolve_defaults` has filled."""
    if value is None:
        raise ValueError(f"{name} is unset after resolve_defaults")
    return value


def resolve_defaults(cfg: TrainConfig) -> None:
    """Fill the config fields left at None with the chosen method's defaults (so config.json records them).

    The projection's hidden width stays None when not given: its default is a multiple of the
    backbone width (:mod:`simclr_core.heads`), which the checkpoint's ``arch`` records as None too.
    """
    if cfg.model.method not in METHODS:
        raise UserError(f"unknown method {cfg.model.method!r}; choose one of {', '.join(METHODS)}")
    for key, value in METHODS[cfg.model.method].defaults.items():
        section = cfg.optim if key == "temperature" else cfg.method
        if getattr(section, key) is None:
            setattr(section, key, value)
    model = cfg.model
    head = model.head = model.head or heads.default_head(model.method)
    # the head's own output size and batch norm, resolved as models.architecture resolves them
    spec = heads.SPECS[heads.check_head(head)]
    if model.proj_out_dim is None:
        model.proj_out_dim = spec.out_dim
    if model.proj_bn is None:
        model.proj_bn = spec.bn


def build_method(cfg: TrainConfig, encoder: Encoder) -> Method:
    """The method module of ``cfg.model.method`` around ``encoder``, with the config's settings."""
    resolve_defaults(cfg)
    m, name = cfg.method, cfg.model.method
    if name == "simclr":
        return SimCLR(encoder, temperature=_resolved(cfg.optim.temperature, "temperature"))
    if name == "moco_v2":
        return MoCoV2(encoder, temperature=_resolved(cfg.optim.temperature, "temperature"),
                      queue_size=m.queue_size, ema=_resolved(m.ema, "ema"),
                      ema_schedule=_resolved(m.ema_schedule, "ema_schedule"), symmetric=m.moco_symmetric,
                      key_bn_splits=m.key_bn_splits)
    if name == "byol":
        return BYOL(encoder, ema=_resolved(m.ema, "ema"), ema_schedule=_resolved(m.ema_schedule, "ema_schedule"),
                    pred_hidden_dim=m.pred_hidden_dim)
    raise UserError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
