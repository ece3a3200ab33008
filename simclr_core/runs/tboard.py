"""TensorBoard scalars beside ``metrics.jsonl``, so ``tensorboard --logdir checkpoints`` shows and compares every run.

``metrics.jsonl`` stays the app's source of truth; this is a mirror of its numbers for the tool people
already watch. Optional: without the ``tensorboard`` package (e.g. on a bare GPU box) nothing is written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["Scalars", "available"]

# metrics.jsonl key -> TensorBoard tag, for the lines logged every --log-every steps ...
STEP_TAGS = {"loss": "train/loss", "lr": "train/lr", "images_per_s": "train/images_per_s"}
# ... and for the line at the end of each epoch (its "kind" is "epoch")
EPOCH_TAGS = {
    "epoch_loss": "epoch/loss",
    "images_per_s": "epoch/images_per_s",
    "knn_top1": "knn/top1",
    "knn_top5": "knn/top5",
    "rankme_h": "health/rankme_h",
    "rankme_z": "health/rankme_z",
    "alignment": "health/alignment",
    "uniformity": "health/uniformity",
    # issue 20's label-free signals, each for the backbone h and the projection z
    **{f"{sig}_{f}": f"health/{sig}_{f}" for sig in ("areq", "lidar", "pseudo_knn") for f in ("h", "z")},
}


def available() -> bool:
    """True when the tensorboard package is installed (torch's writer needs it)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


class Scalars:
    """Writes each metrics line's numbers as scalars at its optimiser step; a no-op when off or not installed.

    Args:
        log_dir: the run folder (each run is one TensorBoard run, named by its folder).
        resume_step: on resume, the checkpoint's step: events of a killed process past it are dropped,
            as metrics.jsonl's lines past it are.
    """

    def __init__(self, log_dir: str | Path, resume_step: int = 0, enabled: bool = True):
        self.writer: Any = None
        if not enabled or not available():
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=resume_step + 1 if resume_step else None)

    @property
    def on(self) -> bool:
        return self.writer is not None

    def write(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        epoch = record.get("kind") == "epoch"
        tags = EPOCH_TAGS if epoch else STEP_TAGS
        for key, tag in tags.items():
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, value, record["step"])
        if epoch:
            self.writer.flush()  # an epoch's numbers show in a running TensorBoard at once

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
