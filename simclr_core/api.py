"""The Python API for notebooks: pre-train, load what was learned, embed images, evaluate.

    from simclr_core import pretrain, recipe, load_backbone, embed_images, evaluate_run
A thin layer over the engine the CLIs and the app use (the same run folders, checkpoints and
embedding function), re-exported by :mod:`simclr_core`; README "Python API" shows it in use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simclr_core.config import TrainConfig
from simclr_core.embeddings import extract
from simclr_core.errors import UserError
from simclr_core.evaluation.run import evaluate_run as _evaluate_run
from simclr_core.hardware import resolve_device
from simclr_core.models import Backbone
from simclr_core.runs.checkpoints import load_backbone
from simclr_core.runs.rundir import RunDir, resolve_run
from simclr_core.zoo import recipe

__all__ = ["embed_images", "evaluate_run", "load_backbone", "pretrain"]


def pretrain(config: TrainConfig | str | Path, **overrides: Any) -> RunDir:
    """Train a run to its last epoch (blocking) and return its folder.

    Args:
        config: a :class:`TrainConfig`, a recipe's name (``configs/<name>.yaml``) or a YAML / JSON file.
        overrides: ``section__field=value`` changes, e.g. ``optim__epochs=5, run__name="mine"``.
    """
    from simclr_core.training import train  # the loop and its setup

    if isinstance(config, TrainConfig):
        cfg = config
    elif Path(config).suffix in (".yaml", ".yml", ".json"):
        cfg = TrainConfig.load(config)
    else:
        cfg = recipe(str(config))
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if not name or not hasattr(cfg, section) or not hasattr(getattr(cfg, section), name):
            raise UserError(f"unknown setting {key!r}: write section__field, e.g. optim__epochs=5")
        setattr(getattr(cfg, section), name, value)
    return train(cfg)


def _as_tensor(images: Any) -> torch.Tensor:
    """(N, 3, H, W) from a uint8 / float tensor or array (NCHW or NHWC), or a list of PIL images."""
    if isinstance(images, Sequence) and images and hasattr(images[0], "convert"):  # PIL images
        arrays = [np.asarray(im.convert("RGB")) for im in images]
        if len({a.shape for a in arrays}) > 1:
            raise UserError("the images differ in size: resize them to one size first")
        images = np.stack(arrays)
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise UserError(f"images must be (N, 3, H, W) or (N, H, W, 3), got shape {tuple(x.shape)}")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise UserError(f"images must have 3 colour channels, got shape {tuple(x.shape)}")
    return x.contiguous()


def embed_images(
    model: Backbone | str | Path | RunDir,
    images: Any,
    *,
    batch_size: int = 256,
    device: str = "auto",
    size: int | None = None,
) -> np.ndarray:
    """Backbone features h of images: (N, F) float32.

    Args:
        model: a :class:`~simclr_core.models.Backbone` (from :func:`load_backbone`), or anything
            :func:`load_backbone` accepts (a run, its name, an exported .safetensors file).
        images: uint8 in [0, 255] or float in [0, 1]; (N, 3, H, W) or (N, H, W, 3), tensor or array;
            or a list of PIL images of one size.
        size: resize to this side first (default: the side the backbone was trained on, when known).
    """
    dev = resolve_device(device)
    backbone = model if isinstance(model, Backbone) else load_backbone(model)
    side = size or backbone.meta.get("image_size")
    return extract(backbone.to(dev), _as_tensor(images), size=side, device=dev, batch_size=batch_size).numpy()


def evaluate_run(run: str | Path | RunDir, **kwargs: Any) -> dict[str, Any]:
    """kNN and linear-probe accuracy of a run (:func:`simclr_core.evaluation.run.evaluate_run`'s keywords)."""
    return _evaluate_run(resolve_run(run), **kwargs)
