"""Ready-made run configurations (the app's "Preset" select box) and run-name suggestions.

Plain functions returning fresh :class:`~simclr_core.config.TrainConfig` objects, so a caller can
change one without touching the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from simclr_core.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, ViewConfig


def quick_cpu_demo() -> TrainConfig:
    """Digits (bundled, offline) with the small ResNet: under two minutes on a 2-core CPU (kNN ~75% -> ~90%).

    No CIFAR stem: at 32 px the strided stem keeps the small network fast, and the kNN monitor runs
    every epoch (cheap here) so the curve fills in while the user watches.
    """
    return TrainConfig(
        data=DataConfig(dataset="digits"),
        model=ModelConfig(backbone="resnet_mini", cifar_stem=False),
        optim=OptimConfig(epochs=50, batch_size=256),
        # A metrics line every step: there are only a few steps per epoch, and the live loss curve
        # would otherwise get one point per epoch.
        run=RunConfig(knn_every=1, log_every=1),
    )


def cifar10_resnet18() -> TrainConfig:
    """The paper's CIFAR-10 setting (Chen et al. 2020, appendix B.9): ResNet-18, LARS, 500 epochs.

    Colour strength 0.5 and no blur are the paper's CIFAR choices; needs a GPU to be practical.
    """
    return TrainConfig(
        data=DataConfig(dataset="cifar10"),
        views=ViewConfig(jitter_strength=0.5, blur_prob=0.0),
        model=ModelConfig(backbone="resnet18"),
        optim=OptimConfig(epochs=500, batch_size=512, optimizer="lars", temperature=0.5),
    )


PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "Quick CPU demo (digits, ~2 min)": quick_cpu_demo,
    "CIFAR-10 ResNet-18 (paper-style)": cifar10_resnet18,
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
