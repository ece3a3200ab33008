"""How long a run will take on this machine, measured now rather than promised by a constant.

:func:`estimate` builds what training builds (:func:`~simclr_core.training.session.prepare`: the data,
the model, the views, the optimiser, autocast and ``torch.compile`` as configured), then times
:func:`~simclr_core.training.loop.train_step` after a warm-up step, one
:func:`~simclr_core.training.loop.monitor` pass and one checkpoint, and adds them up::

    total = start + per step x steps + monitor x monitor epochs + checkpoint x epochs

It works in a scratch folder of the system's temp directory, deleted afterwards: nothing is written
into the runs folder and no run's lock is taken. The measurement is capped by time (``seconds``):
a CPU too slow for one full batch within the budget is timed on part of a batch, and a monitor pass
too long for it on a sample of its images; both are scaled up (linearly) and say so. Other processes
busy on the machine slow the measured steps as they will slow the run; :meth:`Estimate.describe`
says when the load average was high. Python's own start (importing torch) is not counted.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import io
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from simclr_core import distributed
from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.explorer import probe
from simclr_core.explorer.specs import EstimateSpec
from simclr_core.hardware import describe as describe_device
from simclr_core.runs.rundir import RunDir
from simclr_core.training.batches import batches
from simclr_core.training.loop import monitor, monitor_epoch, train_step
from simclr_core.training.session import Session, prepare
from simclr_core.training.state import save_checkpoint

__all__ = ["Estimate", "estimate", "estimate_job", "job_spec"]

Progress = Callable[[str, int, int], None]  # (stage, done, total), as explore.Progress
DEFAULT_SECONDS = 15.0  # what a measurement may cost, data loading aside
SMALL_BATCH = 32  # a CPU's warm-up steps: one full step of a big model may exceed the whole budget
STEP_SHARE, MONITOR_SHARE = 0.35, 0.25  # of ``seconds``: the timed steps, and the monitor pass
BUSY_LOAD = 0.5  # a load average above half a task per core slows a run measurably
FRESH_S = 600  # younger than this, describe() says "measured just now"


@dataclass
class Estimate:
    """A run's expected duration on this machine, from a measurement; :meth:`describe` says it in a line."""

    device: str  # hardware.describe(): "CPU (2 threads)" or the GPU's name
    device_type: str  # "cpu", "cuda", "mps"
    threads: int  # torch's CPU threads while measuring (those the run will use)
    cpus: int  # logical cores of the machine
    load: float | None  # 1-minute load average just before measuring (others' work); None where unknown
    epochs: int
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    step_s: float  # seconds per optimiser step at the full batch
    images_per_s: float  # training images per second (batch_size / step_s)
    measured_steps: int  # timed steps, after the warm-up ones (excluded)
    measured_batch: int  # images per timed step; below batch_size when scaled up
    monitor_s: float  # one monitor pass (kNN bank + queries, the probe frame); 0 without a monitor
    monitor_epochs: int  # epochs that end with a monitor pass
    monitor_label: str  # "kNN monitor", "probe" or "" (none)
    monitor_sample: float  # fraction of the monitor's image passes measured (1: all of them)
    checkpoint_s: float  # writing last.pt and backbone.pt once (every epoch ends with one)
    start_s: float  # data loading, model building and the first step's one-off cost (torch.compile)
    total_s: float  # the whole run: start + step_s x total_steps + monitor_s x monitor_epochs + checkpoint_s x epochs
    measure_s: float  # what this measurement cost
    measured_at: float  # time.time() when it was made
    notes: list[str] = field(default_factory=list)  # what the session said (compile fallback, skipped files)

    @property
    def busy(self) -> bool:
        """True when other work loaded the machine as it was measured."""
        return self.load is not None and self.load >= BUSY_LOAD * self.cpus

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (the "estimate" job's result adds ``describe``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Estimate:
        """Back from :meth:`to_dict` (or a job's result); keys that are not fields are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def describe(self, now: float | None = None) -> str:
        """One line for the app and the CLI, e.g. "about 2 min on this machine's CPU (2 threads): 0.31 s
        per step x 250 steps + kNN monitor 0.5 s x 50 epochs + ...; measured just now"."""
        parts = [f"{_secs(self.step_s)} s per step x {self.total_steps:,} steps"]
        if self.measured_batch < self.batch_size:
            parts[0] += f" (timed on {self.measured_batch} of {self.batch_size} images a step, scaled)"
        if self.monitor_epochs:
            sample = f" (from {100 * self.monitor_sample:.2g}% of its images)" if self.monitor_sample < 1 else ""
            epochs = "epoch" if self.monitor_epochs == 1 else "epochs"
            parts.append(f"{self.monitor_label} {_secs(self.monitor_s)} s{sample} x {self.monitor_epochs:,} {epochs}")
        parts.append(f"checkpoint {_secs(self.checkpoint_s)} s x {self.epochs:,}")
        parts.append(f"start {_secs(self.start_s)} s")
        age = (time.time() if now is None else now) - self.measured_at
        when = "just now" if age < FRESH_S else time.strftime("at %H:%M on %d %b", time.localtime(self.measured_at))
        line = f"about {_duration(self.total_s)} on this machine's {self.device}: {' + '.join(parts)}; measured {when}"
        if self.busy:
            line += (
                f"; the machine was busy (load average {self.load:.1f} on {self.cpus} cores), "
                "so this holds while that load lasts"
            )
        return line


def estimate(
    cfg: TrainConfig,
    *,
    device: str | None = None,
    steps: int = 10,
    seconds: float = DEFAULT_SECONDS,
    progress: Progress | None = None,
) -> Estimate:
    """Measure how long training ``cfg`` from scratch would take here.

    Args:
        device: where to measure; None: the config's ``run.device`` (auto by default).
        steps: the most training steps timed (after the warm-up).
        seconds: about what the measurement may cost, data loading aside; steps and the monitor
            stop early, or are sampled, to keep to it.
        progress: called with (stage, done, total) as the measurement goes.

    The caller's ``cfg`` is not changed, nor torch's global RNG or thread count.
    """
    if distributed.world_size() > 1:
        raise UserError("the estimate measures one process; run it without torchrun")
    if steps < 1 or seconds <= 0:
        raise UserError("the estimate needs at least 1 step and a positive time budget")
    cfg = copy.deepcopy(cfg)  # prepare() resolves the "auto" settings in place
    if device is not None:
        cfg.run.device = device
    cfg.validate()
    report = progress or _noop
    threads = torch.get_num_threads()
    load = _load_average()  # before measuring: the others' work, not ours
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="simclr-estimate-") as scratch, torch.random.fork_rng(devices=[]):
        try:
            report("loading the data and building the model", 0, 1)
            s = prepare(cfg, RunDir(scratch), resume=False)
            s.log_file = io.StringIO()  # the loop's notes (a compile fallback) land here, not in a run's log
            if s.cfg.views.progressive_start < 1:  # time full-size steps: an upper bound, said in the notes
                s.cfg.views = replace(s.cfg.views, progressive_start=1.0)
                s.notes.append("progressive resolution makes the early steps cheaper: timed at the full view size")
            setup_s = time.perf_counter() - began
            step_s, measured, batch, overhead = _time_steps(s, steps, seconds, report)
            report("timing the monitor", 0, 1)
            monitor_s, sample = _time_monitor(s, seconds * MONITOR_SHARE)
            report("timing a checkpoint", 0, 1)
            checkpoint_s = _timed(s, lambda: save_checkpoint(s))
            measured_threads = torch.get_num_threads()
        finally:
            torch.set_num_threads(threads)
    monitor_epochs = sum(monitor_epoch(s.cfg, e) for e in range(1, s.cfg.optim.epochs + 1)) if monitor_s else 0
    start_s = setup_s + overhead
    total_s = start_s + step_s * s.total_steps + monitor_s * monitor_epochs + checkpoint_s * s.cfg.optim.epochs
    notes = list(s.notes) + [line for line in s.log_file.getvalue().splitlines() if line.strip()]
    report("done", 1, 1)
    est = Estimate(
        device=describe_device(s.device) if s.device.type != "cpu" else f"CPU ({measured_threads} threads)",
        device_type=s.device.type,
        threads=measured_threads,
        cpus=os.cpu_count() or 1,
        load=load,
        epochs=s.cfg.optim.epochs,
        batch_size=s.batch_size,
        steps_per_epoch=s.steps_per_epoch,
        total_steps=s.total_steps,
        step_s=step_s,
        images_per_s=s.batch_size / step_s,
        measured_steps=measured,
        measured_batch=batch,
        monitor_s=monitor_s,
        monitor_epochs=monitor_epochs,
        monitor_label=("kNN monitor" if s.knn_sets else "probe") if monitor_s else "",
        monitor_sample=sample,
        checkpoint_s=checkpoint_s,
        start_s=start_s,
        total_s=total_s,
        measure_s=time.perf_counter() - began,
        measured_at=time.time(),
        notes=notes,
    )
    if s.device.type == "cuda":  # the app's worker lives on: hand the model's memory back to a run about to start
        del s
        gc.collect()
        torch.cuda.empty_cache()
    return est


def job_spec(cfg: TrainConfig, *, device: str | None = None, requested: float | None = None) -> EstimateSpec:
    """The spec of an "estimate" job (:func:`estimate_job`).

    Jobs with the same spec are one job, and a done job is not run again: pass a new ``requested``
    (e.g. ``time.time()``) to measure afresh, the same one to share a measurement.
    """
    return EstimateSpec(config=cfg.to_dict(), device=device, requested=requested)


def estimate_job(spec: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The background job (``spec``: an :class:`EstimateSpec`'s dict); returns :meth:`Estimate.to_dict` plus
    ``describe``, its line."""
    s = EstimateSpec.from_dict(spec)
    cfg = TrainConfig.from_dict(s.config)
    est = estimate(cfg, device=s.device, seconds=float(s.seconds or DEFAULT_SECONDS), progress=progress)
    return {**est.to_dict(), "describe": est.describe()}


def _time_steps(s: Session, steps: int, seconds: float, report: Progress) -> tuple[float, int, int, float]:
    """(seconds per full-batch step, steps timed, images per timed step, the first step's one-off cost).

    On a GPU, or with torch.compile (one input shape, one compile), the warm-up step takes the full
    batch. On a CPU a slice of 32 images goes first, since one full step of ResNet-18 at batch 512
    takes ~40 s on 2 cores, more than the whole budget; the first step pays the one-off costs, the
    second's CPU time tells the largest batch of which two steps fit their share of the budget. A
    part of a batch is scaled up in proportion to the full one: an upper bound, as a step also has
    costs that do not grow with its images (the optimiser; on a busy CPU, threads waiting for a core
    at every operation), which is why the timed batch is as large as fits.
    """
    B, limit = s.batch_size, seconds * STEP_SHARE / 2
    feed = _endless(s)
    try:
        b = B if s.device.type != "cpu" or s.compiled is not None else min(B, SMALL_BATCH)
        report("warming up (steps not timed)", 0, steps)
        first = _timed(s, lambda: train_step(s, next(feed)[:b]))  # one-off: allocations, kernels, compiling
        steady, spent, n = None, 0.0, 0  # (spent, n): timed at the final batch already
        if b < B:
            steady, effort = _work(s, lambda: train_step(s, next(feed)[:b]))
            spent, n = steady, 1
            # the CPU time judges how big a batch fits, not the clock: on a busy machine a small step
            # waits for a core far longer than a big one (at every operation), and would keep the batch small
            bigger = min(B, int(limit * b / effort) // 8 * 8)
            if bigger > b:
                b, spent, n = bigger, 0.0, 0
                train_step(s, next(feed)[:b])  # a new shape warms up
        _sync(s.device)
        began = time.perf_counter() - spent
        # stop when the next step would overrun the budget, and use what was measured
        while n < steps and (n == 0 or (time.perf_counter() - began) * (n + 1) / n <= seconds * STEP_SHARE):
            train_step(s, next(feed)[:b])
            n += 1
            report("timing training steps", n, steps)
        _sync(s.device)  # the timed steps' queued GPU work is done: a CPU-GPU sync point, once
        per_step = (time.perf_counter() - began) / n
    finally:
        feed.close()
    return per_step * B / b, n, b, max(0.0, first - (per_step if steady is None else steady))


def _time_monitor(s: Session, budget: float) -> tuple[float, float]:
    """(seconds of one whole monitor pass, the fraction of its image passes measured).

    A pass on 16 images of each part (bank, queries, probe) goes first and pays the one-off costs;
    its CPU time tells whether the whole pass fits ``budget``, and then it is timed whole. A longer one is
    timed on the largest sample that fits the rest of the budget, and scaled up in proportion: an
    upper bound, as a pass has costs that do not grow with its images (switching the model to
    evaluation, the probe's health figures, writing its frame). The kNN search grows with bank x
    queries, but is a few per cent of the embedding.
    """
    knn, probe_images = s.knn_sets, s.probe_images
    bank, query = (len(knn[0]), len(knn[1])) if knn else (0, 0)
    probed = len(probe_images) if probe_images is not None else 0
    passes = _passes(knn, probe_images)
    if not passes:
        return 0.0, 1.0
    s.epoch = 1  # the frame's name in the scratch folder

    def sample(share: float, floor: int) -> tuple[tuple | None, torch.Tensor | None]:
        """(knn sets, probe images) of ``share`` of each part, at least ``floor`` images of it."""
        k, q, p = (min(n, max(floor, round(share * n))) for n in (bank, query, probed))
        return (
            (knn[0].subset(k, s.cfg.run.seed), knn[1].subset(q, s.cfg.run.seed)) if knn else None,
            probe_images[:p] if probe_images is not None else None,
        )

    try:
        s.knn_sets, s.probe_images = sample(0.0, 16)
        tiny_s, effort = _work(s, lambda: monitor(s))
        effort = effort if s.device.type == "cpu" else tiny_s  # a GPU's work is not the CPU's time
        tiny = _passes(s.knn_sets, s.probe_images)
        if tiny == passes:  # the whole monitor is that small
            return tiny_s, 1.0
        # judged by CPU time, as the steps' batch; per image an upper bound: a small pass's fixed costs weigh more
        share = (budget - tiny_s) / (passes * effort / tiny)
        s.knn_sets, s.probe_images = sample(1.0, 0) if share >= 1 else sample(share, 32)
        seconds = _timed(s, lambda: monitor(s))
        measured = _passes(s.knn_sets, s.probe_images)
    finally:
        s.knn_sets, s.probe_images = knn, probe_images
    return seconds * passes / measured, measured / passes


def _passes(knn: tuple | None, probe_images: torch.Tensor | None) -> int:
    """Images through the encoder in a monitor pass: bank, queries, and the probe's images and their views."""
    probed = len(probe_images) if probe_images is not None else 0
    return (len(knn[0]) + len(knn[1]) if knn else 0) + (1 + probe.LIDAR_VIEWS) * probed


def _endless(s: Session) -> Generator[torch.Tensor, None, None]:
    """The run's batches, epoch after epoch, as the loop draws them."""
    for epoch in itertools.count():
        yield from batches(s, epoch, 0)


def _work(s: Session, fn: Callable[[], Any]) -> tuple[float, float]:
    """(seconds by the clock, CPU seconds over torch's threads) of ``fn``: the second is what the work
    took of the cores, whatever else wanted them (on a GPU it says little)."""
    _sync(s.device)
    clock, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(s.device)
    return time.perf_counter() - clock, (time.process_time() - cpu) / torch.get_num_threads()


def _timed(s: Session, fn: Callable[[], Any]) -> float:
    """Seconds ``fn`` takes by the clock, its GPU work included (a sync point either side)."""
    return _work(s, fn)[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # Windows has none
        return None


def _noop(stage: str, done: int, total: int) -> None:
    del stage, done, total


def _secs(x: float) -> str:
    """Two significant figures below 10 s (0.42, 3.1), whole seconds above."""
    return f"{x:.2g}" if x < 10 else f"{x:,.0f}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
