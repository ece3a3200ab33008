"""What the app shows of a run's progress: its row in the run list, its curves and the time it has left.

Read from the files :class:`~simclr_core.runs.rundir.RunDir` owns; nothing here writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from simclr_core.errors import UserError
from simclr_core.evaluation.label_free import SIGNALS, finite
from simclr_core.runs.rundir import RunDir, _number, is_epoch_line

__all__ = ["Curves", "RunSummary", "curves", "eta", "summarize"]


@dataclass
class RunSummary:
    """One row of the run list."""

    name: str
    state: str
    message: str
    epoch: int
    epochs: int
    method: str
    last_loss: float | None
    best_knn: float | None
    updated: float
    # the label-free signals at the last monitor epoch ({"rankme_h": 61.2, ...}; evaluation/label_free.py)
    signals: dict[str, float] = field(default_factory=dict)


def summarize(run: RunDir) -> RunSummary:
    """Status, progress and best numbers of a run, read from its files."""
    st = run.status()
    metrics = run.metrics()
    losses = [m["loss"] for m in metrics if isinstance(m.get("loss"), (int, float))]
    knns = [m["knn_top1"] for m in metrics if isinstance(m.get("knn_top1"), (int, float))]
    monitored = [m for m in metrics if any(finite(m.get(s)) for s in SIGNALS)]
    try:
        cfg = run.config()
        epochs, method = cfg.optim.epochs, cfg.method.name
    except UserError:
        epochs, method = 0, ""
    return RunSummary(
        name=run.name,
        state=st.get("state", "unknown"),
        message=st.get("message", ""),
        epoch=int(st.get("epoch", 0)),
        epochs=epochs,
        method=method,
        last_loss=losses[-1] if losses and math.isfinite(losses[-1]) else None,
        best_knn=max(knns) if knns else None,
        updated=float(st.get("updated", 0.0)),
        signals={s: float(v) for s in SIGNALS if finite(v := monitored[-1].get(s))} if monitored else {},
    )


@dataclass
class Curves:
    """A run's metrics lines (:meth:`RunDir.metrics`), sorted into the series the app plots."""

    steps: list[dict[str, Any]]  # loss and lr per logged step
    knn: list[dict[str, Any]]  # the kNN monitor's epochs (``knn_top1``)
    # the probe's label-free health per monitor epoch: whole epoch lines, so every signal on them
    # (``rankme_h``, ``areq_h``, ``lidar_z``, ``pseudo_knn_h``, ...; evaluation/health.py) comes along
    health: list[dict[str, Any]]


def curves(metrics: list[dict[str, Any]]) -> Curves:
    """Sort metrics lines into :class:`Curves`. The loss and lr come from the per-step lines, as an end-of-epoch
    line repeats its epoch's last step; from every line when a run has no per-step line."""
    return Curves(
        steps=[m for m in metrics if not is_epoch_line(m)] or metrics,
        knn=[m for m in metrics if "knn_top1" in m],
        health=[m for m in metrics if _number(m.get("rankme_h"))],
    )


def eta(status: dict[str, Any], batch_size: int) -> float | None:
    """Seconds a running run needs for its remaining steps at its current speed, from :meth:`RunDir.status`;
    None unless it is running at a known speed. The kNN monitor and checkpoints add a little."""
    ips = status.get("images_per_s")
    if status.get("state") != "running" or not ips:
        return None
    return (int(status.get("total_steps") or 0) - int(status.get("step", 0))) * batch_size / ips
