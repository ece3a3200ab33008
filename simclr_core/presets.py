"""The app's presets: the recipe zoo (``configs/``, :mod:`simclr_core.zoo`) by title, the paper's views, run names.

Each call builds a fresh :class:`~simclr_core.config.TrainConfig` from its file, so a caller can change
one without touching the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from simclr_core.config import TrainConfig, ViewConfig
from simclr_core.zoo import Recipe, recipes

RECIPES: dict[str, Recipe] = {r.title: r for r in recipes()}
PRESETS: dict[str, Callable[[], TrainConfig]] = {title: r.config for title, r in RECIPES.items()}
# The Augmentations page's view buttons: the paper's two settings (Chen et al. 2020, appendix A and B.9).
VIEW_PRESETS: dict[str, Callable[[], ViewConfig]] = {
    "Paper ImageNet defaults": ViewConfig.imagenet,
    "Paper CIFAR (s=0.5, no blur)": ViewConfig.cifar,
}


def preset(name: str) -> TrainConfig:
    """A fresh config for the preset called ``name`` (a key of :data:`PRESETS`)."""
    return PRESETS[name]()


def suggest_run_name(dataset: str, backbone: str, existing: Iterable[str] = (), now: datetime | None = None) -> str:
    """A run name such as ``digits-resnet_mini-1122-2315`` that is not in ``existing``.

    Args:
        dataset: Dataset name, the first part.
        backbone: Backbone name, the second part.
        existing: Names already taken; a ``-2``, ``-3``... suffix avoids them.
        now: The time stamped into the name (default: now).
    """
    base = f"{dataset}-{backbone}-{(now or datetime.now()):%m%d-%H%M}"
    taken = set(existing)
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name
