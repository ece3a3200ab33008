"""SimCLR Studio's engine: self-supervised contrastive learning of image representations.

No streamlit here: the app in ``pages/`` and the CLIs (``simclr-train``, ``simclr-evaluate``,
``simclr-embed``, ``simclr-export``) both call this library. The names below are the stable
Python API for notebooks (README, "Python API"); they are imported on first use, so
``import simclr_core`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# name -> module that defines it
_API = {
    "TrainConfig": "simclr_core.config",
    "UserError": "simclr_core.errors",
    "pretrain": "simclr_core.api",
    "embed_images": "simclr_core.api",
    "evaluate_run": "simclr_core.api",
    "load_backbone": "simclr_core.runs.checkpoints",
    "export_backbone": "simclr_core.exporters",
    "recipe": "simclr_core.zoo",
    "recipes": "simclr_core.zoo",
}
__all__ = [
    "TrainConfig",
    "UserError",
    "__version__",
    "embed_images",
    "evaluate_run",
    "export_backbone",
    "load_backbone",
    "pretrain",
    "recipe",
    "recipes",
]
assert set(__all__) == {"__version__", *_API}

if TYPE_CHECKING:
    from simclr_core.api import embed_images, evaluate_run, pretrain
    from simclr_core.config import TrainConfig
    from simclr_core.errors import UserError
    from simclr_core.exporters import export_backbone
    from simclr_core.runs.checkpoints import load_backbone
    from simclr_core.zoo import recipe, recipes


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'simclr_core' has no attribute {name!r}")
