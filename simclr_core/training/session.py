"""The training session: :class:`Session` holds everything the loop touches; :func:`prepare` builds it.

``prepare`` loads the data, resolves the "auto" settings (so ``config.json`` records what ran),
builds the method, optimiser and view generator, and restores ``last.pt`` when resuming.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from simclr_core import distributed
from simclr_core.config import TrainConfig, resolved
from simclr_core.data import datasets as data
from simclr_core.errors import UserError
from simclr_core.explorer import probe
from simclr_core.hardware import autocast_dtype, resolve_device
from simclr_core.methods import Method, build_method
from simclr_core.methods.base import as_module
from simclr_core.models import architecture, build_encoder
from simclr_core.optim import build_optimizer
from simclr_core.resolve import resolve, warnings
from simclr_core.runs import tboard
from simclr_core.runs.rundir import RunDir
from simclr_core.training.memory import auto_batch, check_step_memory
from simclr_core.training.state import restore, view_seed


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
    best: dict[str, Any] | None = None  # --keep-best: what best.pt holds (signal, value, epoch, step: best_record)

    @property
    def batch_size(self) -> int:
        """Images per step over all processes: the config's, with "auto" decided by :func:`prepare`."""
        return resolved(self.cfg.optim.batch_size, "optim.batch_size")

    @property
    def total_steps(self) -> int:
        return self.cfg.optim.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        """Steps of the learning rate's linear warm-up."""
        return round(resolved(self.cfg.optim.warmup_epochs, "optim.warmup_epochs") * self.steps_per_epoch)

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


def prepare(cfg: TrainConfig, run: RunDir, resume: bool) -> Session:
    """Load data, build model and optimiser, and restore ``last.pt`` when resuming."""
    if cfg.run.num_threads:
        torch.set_num_threads(cfg.run.num_threads)
    device = resolve_device(cfg.run.device)
    world, rank = distributed.world_size(), distributed.rank()
    batch = cfg.optim.batch_size  # None: "auto", decided below on the device
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", distributed.local_rank())
        if batch is not None and batch % world:
            raise UserError(
                f"--batch-size {batch} is the global batch and must split evenly "
                f"over the {world} processes; use a multiple of {world}"
            )
        if cfg.run.sync_bn and device.type != "cuda":
            raise UserError("--sync-bn needs CUDA GPUs (torch's SyncBatchNorm does not run on the CPU); drop it")
    d = cfg.data
    pretrain, bank_split, query_split = data.default_splits(d.dataset, d.data_path)
    if cfg.run.keep_best == "knn_top1" and bank_split is None:  # every rank sees it: none waits for the others
        raise UserError(
            "--keep-best knn_top1 needs labelled images for the kNN monitor and this dataset has none; "
            "choose a label-free signal such as --keep-best rankme_h"
        )
    train = data.pretrain_split(d, d.train_split or pretrain, subset=d.subset, seed=cfg.run.seed)
    if batch is not None and batch > len(train):
        raise UserError(
            f"--batch-size {batch} is larger than the {len(train)} training images of {train.name}; lower it"
        )
    # Every "auto" setting, decided once: the session keeps it, and the runner writes it to config.json.
    cfg = resolve(cfg, train.images.shape[-1])
    view_kwargs = cfg.views.kwargs()
    arch = architecture(cfg)
    amp_dtype = autocast_dtype(cfg.optim.precision, device)

    torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank
    method = build_method(cfg, build_encoder(arch))
    module = as_module(method).to(device)  # the same object, as the module that trains
    if device.type == "cuda":
        module.to(memory_format=torch.channels_last)
    auto_note = None
    if batch is None:  # --batch-size auto: only now, with the method on its device, can a step be tried
        found = auto_batch(cfg, method, view_kwargs["size"], device, len(train), world, amp_dtype)
        batch, auto_note = distributed.broadcast(found)  # rank 0's, so every process runs the same batch
        cfg.optim.batch_size = batch
        cfg = resolve(cfg, train.images.shape[-1])  # again: the "auto" learning rate scales with the batch
    check_step_memory(cfg, method, view_kwargs["size"], device, world)  # else the OOM killer ends it without a word
    if world > 1 and cfg.run.sync_bn:  # after --batch-size auto, whose try runs each process alone
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)  # swaps the method's BN layers in place
    # Buffers are not broadcast: MoCo's queue is kept equal on every rank by its own gather, and
    # batch-norm running statistics (used only for evaluation) are rank 0's, as saved.
    model = (
        DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
        if world > 1
        else module
    )
    optimizer = build_optimizer(
        module,
        cfg.optim.optimizer,
        resolved(cfg.optim.lr, "optim.lr"),
        cfg.optim.momentum,
        resolved(cfg.optim.weight_decay, "optim.weight_decay"),
        fused=device.type == "cuda",
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    generator = torch.Generator(device=device).manual_seed(view_seed(cfg.run.seed, rank))
    # Small datasets live on the device, so a batch is one index op (no loader, no copies).
    on_device = train.images.numel() < 4 * 2**30 and device.type != "cpu"
    images = train.images.to(device) if on_device else train.images
    workers = cfg.run.workers if cfg.run.workers is not None else 4 * (device.type == "cuda")

    s = Session(
        cfg=cfg,
        run=run,
        device=device,
        images=images,
        method=method,
        model=model,
        optimizer=optimizer,
        scaler=scaler,
        amp_dtype=amp_dtype,
        view_kwargs=view_kwargs,
        generator=generator,
        arch=arch,
        steps_per_epoch=len(train) // batch,
        skipped=train.skipped,
        workers=0 if on_device else workers,
    )
    s.notes.extend(train.notes)  # what the folder scan skipped, the held-out fifth, no cache
    if auto_note:
        s.notes.append(auto_note)
    s.notes.extend(f"warning: {w}" for w in warnings(cfg, len(train)))
    if cfg.run.compile:
        s.compiled = torch.compile(model)
    if resume:
        restore(s)
    if distributed.is_main():  # the monitor runs on rank 0 only
        s.knn_sets = knn_sets(cfg, bank_split, query_split)
        s.probe_images = probe_images(cfg, run, query_split or bank_split or pretrain, device)
    return s


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
