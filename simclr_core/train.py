"""Pre-train SimCLR headless: ``python -m simclr_core.train --help``.

Read top to bottom: :func:`fit` is the training loop; :func:`prepare` builds everything it
needs (data, model, optimiser, state restored from ``last.pt``); :func:`save_checkpoint`,
:func:`log_step` and :func:`end_epoch` are the bookkeeping beside it.

Many GPUs: ``torchrun --nproc_per_node N -m simclr_core.train ...`` runs the same code in N
processes (DDP). ``--batch-size`` stays the global batch; each rank takes its slice of every
batch, and only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from simclr_core import checkpoints, data, distributed, probe, tboard
from simclr_core.cli import Parser, add_config_args, config_from_args, run_cli
from simclr_core.config import TrainConfig, check_run_name
from simclr_core.embeddings import extract
from simclr_core.errors import UserError
from simclr_core.evaluation import knn_accuracy
from simclr_core.hardware import autocast, autocast_dtype, describe, resolve_device
from simclr_core.methods import Method, build_method
from simclr_core.models import architecture, build_encoder
from simclr_core.optim import build_optimizer, lr_at
from simclr_core.runs import RunDir, new_run, open_run
from simclr_core.views import two_views

# Flags that may change when resuming: they do not change what the run computes.
RESUMABLE = {"epochs", "device", "knn_every", "knn_k", "knn_max_bank", "log_every", "num_threads", "compile",
             "workers", "runs_dir", "probe", "tensorboard",
             # the way out of a diverged run: the next steps differ, the run is still one
             # (config.json keeps the new value)
             "lr", "temperature"}


@dataclass
class Session:
    """Everything the loop touches; built by :func:`prepare`."""

    cfg: TrainConfig
    run: RunDir
    device: torch.device
    images: torch.Tensor  # (N, 3, H, W) uint8, on the device when it fits
    method: Method  # the method itself (state dict, encoder, after_step)
    model: torch.nn.Module  # what the step calls: the method, or DDP around it
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    view_kwargs: dict[str, Any]
    generator: torch.Generator  # draws every view's random parameters
    arch: dict
    steps_per_epoch: int
    epoch: int = 0  # epochs fully done
    step: int = 0  # optimiser steps done
    lr: float = 0.0  # learning rate of the last step
    knn_sets: tuple | None = None  # (bank ImageSet, query ImageSet) for the monitor
    probe_images: torch.Tensor | None = None  # (P, 3, H, W) uint8 on the device: the probe subset (rank 0)
    stop_reason: str | None = None
    skipped: int = 0  # unreadable files skipped in an image folder
    workers: int = 0  # DataLoader workers gathering batches of host-held images (0: gather inline)
    compiled: Any = None  # torch.compile(method) when --compile; shares the method's parameters
    compile_ok: bool = False  # the compiled model has run once
    log_file: Any = None
    scalars: tboard.Scalars | None = None  # the TensorBoard mirror of metrics.jsonl (rank 0)
    window: list = field(default_factory=list)  # loss tensors since the last log line
    window_start: float = 0.0
    epoch_losses: list = field(default_factory=list)  # loss tensors of the current epoch (kept across a resume)
    epoch_start: float = 0.0
    epoch_start_step: int = 0
    notes: list = field(default_factory=list)  # said in train.log once it is open
    saved_at: tuple[int, int] | None = None  # (epoch, step) of the last.pt on disk, written or restored

    @property
    def total_steps(self) -> int:
        return self.cfg.optim.epochs * self.steps_per_epoch

    def record(self, line: dict[str, Any]) -> None:
        """Append a metrics line (rank 0): metrics.jsonl, and its TensorBoard mirror."""
        self.run.append_metrics(line)
        if self.scalars is not None:
            self.scalars.write(line)

    def log(self, msg: str) -> None:
        """A line on stdout and in ``train.log`` (which the app tails); rank 0 only."""
        if not distributed.is_main():
            return
        tqdm.write(msg)
        self.log_file.write(f"{datetime.now():%H:%M:%S} {msg}\n")
        self.log_file.flush()


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The image order of one epoch: a pure function of (seed, epoch), so a resume replays it."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def fit(s: Session) -> str:
    """The training loop. Returns "finished" or "stopped"."""
    cfg = s.cfg
    warmup_steps = round(cfg.optim.warmup() * s.steps_per_epoch)
    s.method.train()
    bar = tqdm(total=s.total_steps, initial=s.step, unit="step", dynamic_ncols=True, file=sys.stderr,
               disable=None if distributed.is_main() else True)
    s.window_start = s.epoch_start = time.perf_counter()
    s.epoch_start_step = s.step
    for epoch in range(s.epoch, cfg.optim.epochs):
        first = s.step - epoch * s.steps_per_epoch
        for i, x in enumerate(batches(s, epoch, first), start=first):  # x: (B, 3, H, W) uint8 on the device
            v1, v2 = two_views(x, generator=s.generator, **s.view_kwargs)  # (B, 3, S, S) float each
            if s.device.type == "cuda":
                v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
            s.lr = lr_at(s.step, s.total_steps, warmup_steps, cfg.optim.peak_lr())
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


class EpochBatches(torch.utils.data.Dataset):
    """This rank's part of batch i of an epoch's order, gathered from the (memory-mapped) uint8 images."""

    def __init__(self, images: torch.Tensor, order: torch.Tensor, batch_size: int, first: int, count: int,
                 part: tuple[int, int]):
        self.images, self.order, self.B, self.first, self.count = images, order, batch_size, first, count
        self.lo, self.hi = part

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> torch.Tensor:
        j = (self.first + i) * self.B
        return self.images[self.order[j + self.lo:j + self.hi]]


def batches(s: Session, epoch: int, first: int):
    """The epoch's batches from ``first`` on, as uint8 tensors on the device, in the order of :func:`epoch_order`.

    Images held on the device are indexed there; images left on the host (too big for the GPU) are
    gathered by DataLoader workers into pinned memory, overlapping the copy with the step. With R
    ranks each takes rows [r*B/R, (r+1)*B/R) of every global batch: the same images in the same
    order whatever R is, which is what lets a run resume on another number of GPUs.
    """
    B, n = s.cfg.optim.batch_size, s.steps_per_epoch
    per_rank = B // distributed.world_size()
    lo = distributed.rank() * per_rank
    hi = lo + per_rank
    order = epoch_order(len(s.images), s.cfg.run.seed, epoch)
    if not s.workers:
        order = order.to(s.images.device)
        for i in range(first, n):
            yield s.images[order[i * B + lo:i * B + hi]].to(s.device, non_blocking=True)
        return
    loader = torch.utils.data.DataLoader(EpochBatches(s.images, order, B, first, n - first, (lo, hi)),
                                         batch_size=None, num_workers=s.workers,
                                         pin_memory=s.device.type == "cuda")
    for x in loader:
        yield x.to(s.device, non_blocking=True)


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
    ips = len(s.window) * s.cfg.optim.batch_size / max(now - s.window_start, 1e-9)
    s.window, s.window_start = [], now
    if not math.isfinite(loss):
        raise diverged(s, f"loss became {loss} at epoch {epoch + 1}, step {s.step}")
    if not distributed.is_main():
        return
    s.record({"epoch": epoch + 1, "step": s.step, "loss": loss, "lr": s.lr, "images_per_s": ips, "time": time.time()})
    s.run.write_status("running", epoch=epoch, step=s.step, total_steps=s.total_steps, images_per_s=ips)
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{s.lr:.3g}", img_s=f"{ips:.0f}")


def end_epoch(s: Session) -> None:
    """kNN monitor, the epoch's metrics line, then ``last.pt`` and ``backbone.pt``."""
    loss = distributed.mean(torch.stack(s.epoch_losses).mean()).item()
    seconds = time.perf_counter() - s.epoch_start
    images = (s.step - s.epoch_start_step) * s.cfg.optim.batch_size
    s.epoch_losses = []
    if not math.isfinite(loss):
        raise diverged(s, f"loss became {loss} in epoch {s.epoch}")
    record: dict[str, Any] = {"epoch": s.epoch, "step": s.step, "loss": loss, "epoch_loss": loss, "lr": s.lr,
                              "epoch_time_s": seconds,
                              "images_per_s": images / seconds,
                              "time": time.time()}
    every = s.cfg.run.knn_every
    if every and (s.epoch % every == 0 or s.epoch == s.cfg.optim.epochs):
        # rank 0 alone holds the monitor's images; the other ranks wait in save_checkpoint
        if s.knn_sets:
            record.update(knn_monitor(s))
        if s.probe_images is not None:
            with autocast(s.device, s.amp_dtype):
                record.update(probe.record(s.method.encoder, s.probe_images, s.view_kwargs, s.run.path, s.epoch,
                                           s.device))
            s.method.train()
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
    save_checkpoint(s)
    # The monitor and the checkpoint do not count as training time.
    s.epoch_start = s.window_start = time.perf_counter()
    s.epoch_start_step = s.step


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


def diverged(s: Session, what: str) -> UserError:
    """The error for a run whose numbers blew up: which checkpoint survives, and a resume that can work."""
    kept = (f"kept the last good checkpoint (epoch {s.saved_at[0]}, step {s.saved_at[1]})" if s.saved_at
            else "no checkpoint was written before it")
    fix = f"--lr {s.cfg.optim.peak_lr() / 2:.3g}"
    if s.cfg.optim.temperature is not None:
        fix += f" (or a higher --temperature than {s.cfg.optim.temperature:g})"
    return UserError(f"{what}; {kept}; resume with a lower learning rate: --resume {s.run.name} {fix}")


def nonfinite(module: torch.nn.Module) -> str | None:
    """The name of the first parameter or buffer holding inf or NaN, or None when all are finite.

    A NaN loss is caught at its step, but the update before it may already have put inf into a
    batch-norm running variance. One CPU-GPU sync for the whole model; the names only on failure.
    """
    tensors = [(n, t) for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_floating_point()]
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):
        return None
    return next(n for n, t in tensors if not bool(torch.isfinite(t).all()))


def save_checkpoint(s: Session) -> None:
    """Write ``last.pt`` (exact-resume state) and ``backbone.pt`` atomically; every rank calls it, rank 0 writes.

    Weights with inf or NaN are never written: the last good checkpoint stays.
    """
    bad = nonfinite(s.method)
    if distributed.any_rank(bad is not None, s.device):
        raise diverged(s, f"the weights became non-finite ({bad or 'on another process'}) at epoch "
                          f"{s.epoch}, step {s.step}")
    generators = distributed.all_objects(s.generator.get_state().cpu())  # each rank draws its own views
    losses = distributed.mean(torch.stack(s.epoch_losses)).cpu() if s.epoch_losses else torch.empty(0)
    if not distributed.is_main():
        return
    state = {
        "format": checkpoints.FORMAT,
        "method": s.cfg.model.method,
        "arch": s.arch,
        "model": s.method.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scaler": s.scaler.state_dict(),
        "epoch": s.epoch,
        "step": s.step,
        "steps_per_epoch": s.steps_per_epoch,
        "view_generator": generators[0],
        "view_generators": generators,
        "epoch_losses": losses,
        "rng": checkpoints.rng_state(),
    }
    try:
        checkpoints.save_atomic(state, s.run.last_ckpt)
        checkpoints.save_backbone(s.method.encoder.backbone, s.arch, s.run.backbone_path, s.view_kwargs["size"])
    except OSError as e:  # a full disk, or a folder made read-only: the previous last.pt is intact
        kept = f"last.pt still holds epoch {s.saved_at[0]}, step {s.saved_at[1]}" if s.saved_at else "no checkpoint yet"
        raise UserError(f"cannot write the checkpoint of epoch {s.epoch}, step {s.step} in {s.run.path} "
                        f"({e.strerror or e}); {kept}. Free space there (or make it writable), then resume "
                        f"with --resume {s.run.name}") from None
    s.saved_at = (s.epoch, s.step)


def prepare(cfg: TrainConfig, run: RunDir, resume: bool) -> Session:
    """Load data, build model and optimiser, and restore ``last.pt`` when resuming."""
    if cfg.run.num_threads:
        torch.set_num_threads(cfg.run.num_threads)
    device = resolve_device(cfg.run.device)
    world, rank = distributed.world_size(), distributed.rank()
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", distributed.local_rank())
        if cfg.optim.batch_size % world:
            raise UserError(f"--batch-size {cfg.optim.batch_size} is the global batch and must split evenly "
                            f"over the {world} processes; use a multiple of {world}")
        if cfg.run.sync_bn and device.type != "cuda":
            raise UserError("--sync-bn needs CUDA GPUs (torch's SyncBatchNorm does not run on the CPU); drop it")
    d = cfg.data
    pretrain, bank_split, query_split = data.default_splits(d.dataset, d.data_path)
    train = data.pretrain_split(d, d.train_split or pretrain, subset=d.subset, seed=cfg.run.seed)
    if cfg.optim.batch_size > len(train):
        raise UserError(f"--batch-size {cfg.optim.batch_size} is larger than the {len(train)} training "
                        f"images of {train.name}; lower it")
    side = train.images.shape[-1]
    # Resolve "auto" settings once, so config.json records what actually ran.
    if cfg.model.cifar_stem is None:
        cfg.model.cifar_stem = side <= 64
    view_kwargs = cfg.views.kwargs(side)
    if cfg.views.blur_prob is None:
        cfg.views.blur_prob = view_kwargs["blur_prob"]
    if cfg.views.jitter_strength is None:
        cfg.views.jitter_strength = view_kwargs["jitter_strength"]
    arch = architecture(cfg.model, side)

    torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank
    method = build_method(cfg, build_encoder(arch)).to(device)
    if world > 1 and cfg.run.sync_bn:
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    if device.type == "cuda":
        method = method.to(memory_format=torch.channels_last)
    # Buffers are not broadcast: MoCo's queue is kept equal on every rank by its own gather, and
    # batch-norm running statistics (used only for evaluation) are rank 0's, as saved.
    model = (DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None,
                                     broadcast_buffers=False) if world > 1 else method)
    amp_dtype = autocast_dtype(cfg.optim.precision, device)
    optimizer = build_optimizer(method, cfg.optim.optimizer, cfg.optim.peak_lr(), cfg.optim.momentum,
                                cfg.optim.decay(), fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    generator = torch.Generator(device=device).manual_seed(view_seed(cfg.run.seed, rank))
    # Small datasets live on the device, so a batch is one index op (no loader, no copies).
    on_device = train.images.numel() < 4 * 2**30 and device.type != "cpu"
    images = train.images.to(device) if on_device else train.images
    workers = cfg.run.workers if cfg.run.workers is not None else 4 * (device.type == "cuda")

    s = Session(cfg=cfg, run=run, device=device, images=images, method=method, model=model, optimizer=optimizer,
                scaler=scaler, amp_dtype=amp_dtype, view_kwargs=view_kwargs, generator=generator, arch=arch,
                steps_per_epoch=len(train) // cfg.optim.batch_size, skipped=train.skipped,
                workers=0 if on_device else workers)
    s.notes.extend(train.notes)  # what the folder scan skipped, the held-out fifth, no cache
    if cfg.model.method == "moco_v2" and cfg.method.queue_size > len(train):
        s.notes.append(f"warning: the MoCo queue (--queue-size {cfg.method.queue_size}) is larger than the "
                       f"{len(train)} training images, so it holds each image's own older keys as negatives; "
                       f"use a queue of at most {len(train)}")
    if cfg.run.compile:
        s.compiled = torch.compile(model)
    if resume:
        restore(s)
    if distributed.is_main():  # the monitor runs on rank 0 only
        s.knn_sets = knn_sets(cfg, bank_split, query_split)
        s.probe_images = probe_images(cfg, run, query_split or bank_split or pretrain, device)
    return s


def view_seed(seed: int, rank: int, step: int = 0) -> int:
    """Seed of a rank's view generator; rank 0 of a fresh run uses seed + 1, as a single process does."""
    return seed + 1 + 1_000_003 * rank + 7_919 * step


def restore(s: Session) -> None:
    """Load ``last.pt`` into the session: weights, optimiser, scaler, step, every RNG."""
    path = s.run.last_ckpt
    if not path.is_file():
        return  # stopped before its first checkpoint: start from scratch
    ckpt = checkpoints.load_training(path, map_location=s.device)
    checkpoints.check_architecture(ckpt["arch"], s.arch, path)
    checkpoints.load_state(s.method, ckpt["model"], path)
    s.optimizer.load_state_dict(ckpt["optimizer"])
    s.scaler.load_state_dict(ckpt["scaler"])
    if ckpt["steps_per_epoch"] != s.steps_per_epoch:
        raise UserError(f"{path} was saved with {ckpt['steps_per_epoch']} steps per epoch but the data now "
                        f"gives {s.steps_per_epoch}: the dataset changed; start a new run")
    s.epoch, s.step = ckpt["epoch"], ckpt["step"]
    s.saved_at = (s.epoch, s.step)
    generators = ckpt.get("view_generators") or [ckpt["view_generator"]]
    if len(generators) == distributed.world_size():
        s.generator.set_state(generators[distributed.rank()].cpu())
    else:  # another number of processes: same data order, fresh (seeded) view streams
        s.generator.manual_seed(view_seed(s.cfg.run.seed, distributed.rank(), s.step))
        s.notes.append(f"note: saved by {len(generators)} process(es), resumed on {distributed.world_size()}; "
                       "the data order continues exactly, the random views from new seeded streams")
    s.epoch_losses = list(ckpt["epoch_losses"].to(s.device))
    checkpoints.set_rng_state(ckpt["rng"])


def knn_sets(cfg: TrainConfig, bank_split: str | None, query_split: str | None) -> tuple | None:
    """(bank, query) ImageSets for the monitor, or None when it is off or there are no labels."""
    if not cfg.run.knn_every or bank_split is None:
        return None
    if query_split is None:  # one labelled split only: its held-out fifth are the queries
        bank, query = data.held_out(cfg.data, bank_split)
        bank = bank.subset(cfg.run.knn_max_bank, cfg.run.seed)
    else:
        bank = data.split_of(cfg.data, bank_split, subset=cfg.run.knn_max_bank, seed=cfg.run.seed)
        query = data.split_of(cfg.data, query_split)
    return (bank, query) if bank.labelled else None


def probe_images(cfg: TrainConfig, run: RunDir, split: str, device: torch.device) -> torch.Tensor | None:
    """The probe subset's images on the device, chosen once (stratified) and kept in ``probe/subset.json``.

    None when the probe or the monitor is off. A resumed run reads its subset back, so every frame
    holds the same images in the same order.
    """
    if not (cfg.run.probe and cfg.run.probe_size and cfg.run.knn_every):
        return None
    chosen = probe.read_subset(run.path)
    if chosen is None or chosen.split != split:
        images = data.split_of(cfg.data, split)
        rows = probe.choose(images.labels.numpy(), cfg.run.probe_size, cfg.run.seed)
        chosen = probe.Probe(split, rows, images.labels.numpy()[rows], list(images.classes))
        probe.write_subset(run.path, chosen)
    else:
        images = data.split_of(cfg.data, chosen.split)
    return images.images[torch.from_numpy(chosen.rows)].to(device)


def train(cfg: TrainConfig, resume: bool = False) -> RunDir:
    """Create (or reopen) the run folder and train to ``cfg.optim.epochs``; the programmatic entry point.

    Under torchrun every rank calls this; rank 0 creates the folder and writes every file.
    """
    cfg.validate()
    distributed.setup(resolve_device(cfg.run.device).type)
    main = distributed.is_main()
    if cfg.run.name is None and not resume:
        cfg.run.name = distributed.broadcast(f"{cfg.data.dataset}-{cfg.model.backbone}-{datetime.now():%Y%m%d-%H%M%S}")
    with contextlib.ExitStack() as held:
        error = None
        if main:  # rank 0 writes every file: it alone takes the folder's writer lock, before anything else
            name = cfg.run.name
            try:
                name = check_run_name(name)
                run = open_run(cfg.run.runs_dir, name) if resume else RunDir(Path(cfg.run.runs_dir) / name)
                held.enter_context(run.writer("training"))
                if not resume:
                    run = new_run(cfg.run.runs_dir, name)
                    # at once, so a run that fails while loading data is listed with its error
                    cfg.save(run.config_path)
            except UserError as e:
                error = str(e)
            except OSError as e:  # a read-only folder, or --runs-dir naming a file
                error = (f"cannot write the run folder {Path(cfg.run.runs_dir) / str(name)} ({e.strerror or e}); "
                         + ("make it writable, then resume" if resume else "choose another --runs-dir"))
        error = distributed.broadcast(error)  # every rank fails alike, none waits forever
        if error:
            raise UserError(error)
        if not main:
            run = open_run(cfg.run.runs_dir, check_run_name(cfg.run.name))
        return _train_in(run, cfg, resume)


def _train_in(run: RunDir, cfg: TrainConfig, resume: bool) -> RunDir:
    """The run's lifecycle once its folder is ours: status, log, the loop, and how it ended."""
    main = distributed.is_main()

    def status(state: str, *args, **kw) -> None:
        if main:
            try:
                run.write_status(state, *args, **kw)
            except OSError as e:  # the disk is full: the run goes on, or ends with its own message
                print(f"note: could not write {run.status_path} ({e.strerror or e})", file=sys.stderr)

    if main:
        run.clear_stop()
    with open(run.log_path if main else os.devnull, "a") as log_file:
        try:
            s = prepare(cfg, run, resume)
            s.log_file = log_file
            if main:
                cfg.save(run.config_path)
                run.truncate_metrics(s.step)
                probe.drop_frames_after(run.path, s.epoch)
                s.scalars = tboard.Scalars(run.path, s.step, enabled=cfg.run.tensorboard)
            world = distributed.world_size()
            s.log(f"{'resuming' if s.step else 'starting'} {cfg.model.method} run {run.name} at epoch {s.epoch}, "
                  f"step {s.step} of {s.total_steps} on {describe(s.device)}"
                  + (f" x {world} processes" if world > 1 else "")
                  + f"; {len(s.images)} images, {s.steps_per_epoch} steps per epoch"
                  + (f"; skipped {s.skipped} file(s)" if s.skipped else ""))
            for note in s.notes:
                s.log(note)
            status("running", epoch=s.epoch, step=s.step, total_steps=s.total_steps,
                   device=describe(s.device) + (f" x {world}" if world > 1 else ""))
            with stop_on_signals(s):
                try:
                    outcome = fit(s)
                finally:
                    if s.scalars is not None:
                        s.scalars.close()
        except UserError as e:
            status("failed", str(e))
            raise
        except OSError as e:  # the run folder filled its disk, or became read-only, between checkpoints
            msg = (f"cannot write {e.filename or 'to the run folder'} ({e.strerror or e}); free space there (or "
                   f"make it writable), then resume with --resume {run.name}")
            status("failed", msg)
            raise UserError(msg) from None
        except torch.cuda.OutOfMemoryError:
            msg = (f"out of GPU memory at batch size {cfg.optim.batch_size}; lower --batch-size "
                   "(or use --precision bf16), then resume")
            status("failed", msg)
            raise UserError(msg) from None
        except BaseException as e:
            status("failed", f"{type(e).__name__}: {e}".splitlines()[0])
            raise
        if outcome == "stopped":
            msg = f"stopped by {s.stop_reason} at epoch {s.epoch + 1}, step {s.step}; resume with --resume {run.name}"
        else:
            msg = f"finished {s.epoch} epochs"
        s.log(msg)
        status(outcome, msg, epoch=s.epoch, step=s.step, total_steps=s.total_steps)
        if main:
            run.clear_stop()
    return run


class stop_on_signals:
    """While active, SIGINT/SIGTERM ask the loop to checkpoint and stop instead of killing it."""

    def __init__(self, s: Session):
        self.s = s
        self.old: dict[signal.Signals, Any] = {}

    def __enter__(self):
        def handler(signum, frame):
            if self.s.stop_reason is not None:  # a second Ctrl-C stops at once
                raise KeyboardInterrupt
            self.s.stop_reason = signal.Signals(signum).name

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread (e.g. inside a test runner thread)
                self.old[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self.old.items():
            signal.signal(sig, old)
        return False


def build_parser() -> argparse.ArgumentParser:
    """The ``simclr_core.train`` command line: one flag per config field."""
    p = Parser(
        prog="python -m simclr_core.train",
        description="Pre-train SimCLR on an image dataset. Writes checkpoints/<name>/ with config.json, "
                    "metrics.jsonl, status.json, last.pt and backbone.pt. Ctrl-C, SIGTERM or a STOP file in "
                    "the run folder stop cleanly after a checkpoint; --resume NAME continues exactly.",
    )
    p.add_argument("--config", help="JSON or YAML file with sections data/views/model/optim/run; "
                                    "flags given here override it")
    p.add_argument("--resume", metavar="RUN", help="continue the run of this name from its last.pt "
                                                   "(only --epochs, --device and monitor flags may change)")
    add_config_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; user errors print one line and return 2."""
    def go() -> int:
        args = build_parser().parse_args(argv)
        cfg, given = config_from_args(args)
        if args.resume:
            changed = sorted(given - RESUMABLE)
            if changed:
                raise UserError(f"cannot change {', '.join('--' + c.replace('_', '-') for c in changed)} when "
                                "resuming (the run would no longer be one run); start a new run instead")
            run = open_run(cfg.run.runs_dir, args.resume)
            saved = run.config()
            for section, key in ((s, k) for s in ("optim", "run") for k in given):
                if hasattr(getattr(saved, section), key):
                    setattr(getattr(saved, section), key, getattr(getattr(cfg, section), key))
            saved.run.name = run.name
        # Under torchrun: join the group before any rank reads the run's status, and read it
        # before rank 0 writes to it (barrier), so no rank mistakes rank 0's run for another one.
        distributed.setup(resolve_device((saved if args.resume else cfg).run.device).type)
        try:
            if args.resume:
                st = run.status()
                if st.get("state") == "running":
                    raise UserError(f"run '{run.name}' is running (pid {st.get('pid')}); stop it first")
                if st.get("state") == "finished" and st.get("epoch", 0) >= saved.optim.epochs:
                    raise UserError(f"run '{run.name}' already finished {st.get('epoch')} epochs; pass --epochs N "
                                    f"with N > {st.get('epoch')} to train it longer")
                cfg = saved
            distributed.barrier()
            run = train(cfg, resume=bool(args.resume))
            main = distributed.is_main()
        finally:
            distributed.cleanup()
        if main:
            print(f"run folder: {run.path}")
        return 0

    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
