"""One step decides every "auto" setting: :func:`resolve`.

A config field left at None means "auto": its value depends on the method, the head or the image
size. :func:`resolve` fills them all at once, from their owners:

- the method class: its ``defaults`` (temperature, momentum, schedule) and its ``head``;
- the head's spec (:data:`simclr_core.heads.SPECS`): the output size and batch norm;
- the image side: the CIFAR stem and the paper's CIFAR views for small images
  (:meth:`~simclr_core.config.ViewConfig.resolved`);
- the optimiser: the learning rate's linear scaling, weight decay, warm-up
  (:meth:`~simclr_core.config.OptimConfig.resolved`).

The trainer (:func:`simclr_core.training.session.prepare`, which writes the result to
``config.json``, so a run records what ran), the embedder, the pre-launch check, the run-time
estimate and the app all call it. One value stays "auto" after it: the projection's hidden width,
a multiple of the backbone's width that the encoder works out, and checkpoints record as None.
``--batch-size auto`` (and an "auto" learning rate, which scales with it) stays too: only the device
can tell what fits, so :func:`~simclr_core.training.session.prepare` decides it, then resolves again.
"""

from __future__ import annotations

import copy

from simclr_core import heads
from simclr_core.config import SMALL_IMAGE, TrainConfig
from simclr_core.methods import METHODS, method_class

__all__ = ["auto_note", "resolve", "warnings"]


def resolve(cfg: TrainConfig, image_side: int) -> TrainConfig:
    """A copy of ``cfg`` with every "auto" value filled for images of ``image_side`` pixels.

    Idempotent: a resolved config resolves to itself (a resumed run keeps what it ran with).
    Raises a UserError for an unknown method or head.
    """
    method = method_class(cfg.method.name)
    out = copy.deepcopy(cfg)
    out.views = cfg.views.resolved(image_side)
    out.optim = cfg.optim.resolved()
    for key, value in method.defaults.items():
        if getattr(out.method, key) is None:
            setattr(out.method, key, value)
    model = out.model
    if model.cifar_stem is None:
        model.cifar_stem = image_side <= SMALL_IMAGE
    model.head = heads.check_head(model.head or method.head)
    spec = heads.SPECS[model.head]
    if model.proj_out_dim is None:
        model.proj_out_dim = spec.out_dim
    if model.proj_bn is None:
        model.proj_bn = spec.bn
    return out


def warnings(cfg: TrainConfig, train_images: int) -> list[str]:
    """What the chosen method says about these settings on ``train_images`` images (a run still starts)."""
    return method_class(cfg.method.name).warnings(cfg.method, train_images)


def auto_note(section: str, name: str) -> str | None:
    """The "auto" values of a field that depend on the method or the head, in words, from their owners
    (the help texts of the CLI and the app append it): "auto: 0.5 simclr, 0.2 moco_v2"."""
    if section == "method" and any(name in cls.defaults for cls in METHODS.values()):
        values = [f"{cls.defaults[name]} {m}" for m, cls in METHODS.items() if name in cls.defaults]
        return "auto: " + ", ".join(values)
    if (section, name) == ("model", "head"):
        return "auto: the method's own (" + ", ".join(f"{cls.head} for {m}" for m, cls in METHODS.items()) + ")"
    if (section, name) == ("model", "proj_out_dim"):
        return "auto: the head's (" + ", ".join(f"{s.out_dim} {h}" for h, s in heads.SPECS.items()) + ")"
    if (section, name) == ("model", "proj_bn"):
        return "auto: the head's (" + ", ".join(f"{'on' if s.bn else 'off'} {h}" for h, s in heads.SPECS.items()) + ")"
    return None
