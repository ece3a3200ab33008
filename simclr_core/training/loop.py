"""The training loop: :func:`fit`, and the bookkeeping it calls at log steps and epoch ends.

One page to read: :func:`train_step` (views, lr, forward under autocast, backward, the momentum
update); every ``log_every`` steps a metrics line (a CPU-GPU sync point, so not every step); at each
epoch's end the :func:`monitor` (kNN, the probe frame, the collapse alarm with its likely cause) and the
checkpoint, with ``best.pt`` when ``--keep-best``'s signal improved. :mod:`simclr_core.training.estimate`
times the same step, monitor and checkpoint.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import torch
from tqdm import tqdm

from simclr_core import distributed
from simclr_core.config import TrainConfig, resolved
from simclr_core.embeddings import extract
from simclr_core.evaluation.classifiers import knn_accuracy
from simclr_core.evaluation.health import collapse_alarm, likely_causes
from simclr_core.explorer import probe
from simclr_core.hardware import autocast
from simclr_core.optim import lr_at
from simclr_core.training.batches import batches
from simclr_core.training.session import Session
from simclr_core.training.state import best_candidate, diverged, save_checkpoint
from simclr_core.views import two_views


def fit(s: Session) -> str:
    """The training loop. Returns "finished" or "stopped"."""
    cfg = s.cfg
    s.method.train()
    bar = tqdm(
        total=s.total_steps,
        initial=s.step,
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
        disable=None if distributed.is_main() else True,
    )
    s.window_start = s.epoch_start = time.perf_counter()
    s.epoch_start_step = s.step
    for epoch in range(s.epoch, cfg.optim.epochs):
        first = s.step - epoch * s.steps_per_epoch
        for i, x in enumerate(batches(s, epoch, first), start=first):  # x: (B, 3, H, W) uint8 on the device
            loss = train_step(s, x)
            bar.update()
            s.window.append(loss.detach())
            s.epoch_losses.append(loss.detach())
            # A host sync only every log_every steps (and at the end of an epoch).
            last = i == s.steps_per_epoch - 1
            if s.step % cfg.run.log_every == 0 or last:
                log_step(s, epoch, bar)
            # Ranks agree on stopping only at log steps (a collective); one process checks every step.
            poll = distributed.world_size() == 1 or s.step % cfg.run.log_every == 0
            if not last and poll and stop_requested(s):  # mid-epoch: save where we are
                log_step(s, epoch, bar)
                s.epoch = epoch
                save_checkpoint(s)
                bar.close()
                return "stopped"
        s.epoch = epoch + 1
        end_epoch(s)
        if stop_requested(s) and s.epoch < cfg.optim.epochs:
            bar.close()
            return "stopped"
    bar.close()
    return "finished"


def train_step(s: Session, x: torch.Tensor) -> torch.Tensor:
    """One optimiser step on a (B, 3, H, W) uint8 batch: views, lr, forward under autocast, backward,
    the momentum update. Returns the loss, left on the device (reading it is a CPU-GPU sync point).

    :mod:`simclr_core.training.estimate` times this same step.
    """
    # the view side from the step alone (progressive resolution), so a resumed run draws the same views
    size = s.cfg.views.size_at(s.step / s.total_steps)
    v1, v2 = two_views(x, generator=s.generator, **{**s.view_kwargs, "size": size})  # (B, 3, S, S) float each
    if s.device.type == "cuda":
        v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
    s.lr = lr_at(s.step, s.total_steps, s.warmup_steps, resolved(s.cfg.optim.lr, "optim.lr"))
    for g in s.optimizer.param_groups:
        g["lr"] = s.lr
    with autocast(s.device, s.amp_dtype):
        loss = forward(s, v1, v2)
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(loss).backward()
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.step += 1
    s.method.after_step(s.step, s.total_steps)  # MoCo / BYOL: momentum update of the target
    return loss


def forward(s: Session, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """The method's loss, through torch.compile when asked; a compile failure falls back to eager once."""
    if s.compiled is None:
        return s.model(v1, v2)
    if s.compile_ok:
        return s.compiled(v1, v2)
    try:  # compiling happens on the first call, so that is where it fails
        loss = s.compiled(v1, v2)
    except Exception as e:  # noqa: BLE001 - any backend failure means: run eager
        s.log(f"note: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); running eager")
        s.compiled = None
        return s.model(v1, v2)
    s.compile_ok = True
    return loss


def stop_requested(s: Session) -> bool:
    """True once a signal arrived or the run folder holds a STOP file (on any rank: all stop together)."""
    if s.stop_reason is None and s.run.stop_requested():
        s.stop_reason = "STOP file"
    if distributed.any_rank(s.stop_reason is not None, s.device):
        s.stop_reason = s.stop_reason or "a stop on another rank"
        return True
    return False


def log_step(s: Session, epoch: int, bar: tqdm) -> None:
    """Append a metrics line for the steps since the last one; fail on a non-finite loss."""
    if not s.window:
        return
    loss = distributed.mean(torch.stack(s.window).mean()).item()  # over all ranks' images
    now = time.perf_counter()
    ips = len(s.window) * s.batch_size / max(now - s.window_start, 1e-9)
    s.window, s.window_start = [], now
    if not math.isfinite(loss):
        raise diverged(s, f"loss became {loss} at epoch {epoch + 1}, step {s.step}")
    if not distributed.is_main():
        return
    s.record(
        {
            "kind": "step",
            "epoch": epoch + 1,
            "step": s.step,
            "loss": loss,
            "lr": s.lr,
            "images_per_s": ips,
            "time": time.time(),
        }
    )
    s.run.write_status("running", epoch=epoch, step=s.step, total_steps=s.total_steps, images_per_s=ips)
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{s.lr:.3g}", img_s=f"{ips:.0f}")


def end_epoch(s: Session) -> None:
    """kNN monitor, the epoch's metrics line, then ``last.pt`` and ``backbone.pt`` (and ``best.pt`` when
    this epoch beat it)."""
    loss = distributed.mean(torch.stack(s.epoch_losses).mean()).item()
    seconds = time.perf_counter() - s.epoch_start
    images = (s.step - s.epoch_start_step) * s.batch_size
    s.epoch_losses = []
    if not math.isfinite(loss):
        raise diverged(s, f"loss became {loss} in epoch {s.epoch}")
    record: dict[str, Any] = {
        "kind": "epoch",
        "epoch": s.epoch,
        "step": s.step,
        "loss": loss,
        "epoch_loss": loss,
        "lr": s.lr,
        "epoch_time_s": seconds,
        "images_per_s": images / seconds,
        "time": time.time(),
    }
    if monitor_epoch(s.cfg, s.epoch):
        # rank 0 alone holds the monitor's images; the other ranks wait in save_checkpoint
        record.update(monitor(s))
    if distributed.is_main():
        s.record(record)
    msg = f"epoch {s.epoch}/{s.cfg.optim.epochs} loss {loss:.4f} ({seconds:.1f} s)"
    if "knn_top1" in record:
        msg += f" kNN top-1 {record['knn_top1']:.2f}%"
    if "rankme_h" in record:
        msg += f" RankMe {record['rankme_h']:.1f}"
    s.log(msg)
    if "collapse" in record:
        s.log(f"warning: {record['collapse']}")
    best = best_candidate(s, record) if distributed.is_main() else None  # rank 0 alone holds the monitor's record
    save_checkpoint(s, best)
    if best is not None:
        s.log(f"best.pt: epoch {s.epoch}, {best['signal']} {best['value']:.4g}")
    # The monitor and the checkpoint do not count as training time.
    s.epoch_start = s.window_start = time.perf_counter()
    s.epoch_start_step = s.step


def monitor_epoch(cfg: TrainConfig, epoch: int) -> bool:
    """True when the monitor runs at the end of ``epoch`` (1-based): every ``knn_every`` epochs, and the last."""
    every = cfg.run.knn_every
    return bool(every) and (epoch % every == 0 or epoch == cfg.optim.epochs)


def monitor(s: Session) -> dict[str, Any]:
    """One monitor pass: the kNN accuracy, and the probe frame (written) with its health; what each
    session has images for (rank 0's)."""
    record: dict[str, Any] = {}
    if s.knn_sets:
        record.update(knn_monitor(s))
    if s.probe_images is not None:
        with autocast(s.device, s.amp_dtype):
            record.update(probe.record(s.method.encoder, s.probe_images, s.view_kwargs, s.run.path, s.epoch, s.device))
        s.method.train()
        if "collapse" in record:  # the probe sees the numbers; the run's settings name the likely cause
            rank = min(record["rankme_h"], record["rankme_z"])
            causes = likely_causes(s.cfg)
            record["collapse"] = collapse_alarm(rank, record["uniformity"], causes, s.run.name) or record["collapse"]
    return record


def knn_monitor(s: Session) -> dict[str, float]:
    """Weighted kNN (cosine, k, T=0.1) of backbone features: bank split -> query split."""
    assert s.knn_sets is not None, "knn_monitor runs only when the monitor has its images"
    bank, query = s.knn_sets
    encoder = s.method.encoder
    size = s.view_kwargs["size"]
    with autocast(s.device, s.amp_dtype):
        fb = extract(encoder, bank.images, size=size, device=s.device)
        fq = extract(encoder, query.images, size=size, device=s.device)
    s.method.train()
    return knn_accuracy(fb, bank.labels, fq, query.labels, k=s.cfg.run.knn_k)
