"""Benchmark: SimCLR training throughput of this project's pipeline vs a common torchvision one.

    python bench/throughput.py --steps 3 --warmup 1 --batch-size 32 --backbone resnet_mini   # CPU: quick check
    python bench/throughput.py --steps 12 --rounds 4 --warmup 1 --batch-size 256 --workers 2   # CPU, ResNet-18
    python bench/throughput.py          # one GPU: ResNet-18, batch 512, 50 timed steps each, CIFAR-10 JPEGs

One process, one device, one model, one optimiser, one batch size; the two pipelines take turns
and print image pairs/s (one pair per image, so pairs/s = images/s), seconds per 50,000-image
epoch and the ratio a/b. ``--rounds R`` splits the timed steps into R rounds that alternate which
pipeline goes first: on a machine whose speed drifts (a shared VM), running (a) then (b) once
measured (a) 7-10% slow on the 2-core box; 4 alternating rounds showed the two equal there.

(a) project: the real training loop. ``simclr_core.training.prepare`` builds the session exactly as
    ``python -m simclr_core.train`` does (uint8 image tensor, on the GPU when CUDA; SimCLR from
    ``build_encoder``/``METHODS``; ``build_optimizer`` with fused SGD on CUDA; bf16 autocast and
    channels_last on CUDA), then ``simclr_core.training.fit`` itself runs: random batch by index,
    ``two_views`` on the device, one SimCLR pass over both views, NT-Xent, backward, SGD step,
    plus the loop's own per-step bookkeeping (lr schedule, STOP-file poll, a metrics line and a
    host sync every 10 steps). Only ``steps_per_epoch`` is set to the number of steps wanted,
    first for the warm-up, then for the measurement. The time is fit's own epoch clock
    (``epoch_time_s`` in metrics.jsonl): it starts when fit starts, on an idle device, and stops
    after a ``.item()`` that waits for every queued kernel; the end-of-epoch checkpoint is
    written after it stops, so it is not counted. More steps than one epoch holds run as several
    epochs and their times add up.
(b) reference, written the common way: the same decoded images held as an (N, H, W, 3) uint8
    array (as ``torchvision.datasets.CIFAR10`` does), a Dataset whose item is two independent
    ``torchvision.transforms.v2`` views of ``PIL.Image.fromarray(image)``, a ``DataLoader``
    (shuffle, drop_last, ``num_workers`` W, persistent workers, pinned memory on CUDA), then
    ``.to(device, non_blocking=True)``, channels_last on CUDA and the same model, optimiser,
    autocast and GradScaler as (a). No per-step host sync; ``torch.cuda.synchronize()`` before
    and after the timed steps. The loader's W workers finish their batches at nearly the same
    moment, so batches arrive in bursts of W; the timed step count is rounded up to a multiple
    of W, which makes the measurement independent of where in a burst it starts.

Views: ``--views cifar`` is the paper's CIFAR setting (colour strength 0.5, no blur), ``imagenet``
its ImageNet one (strength 1.0, Gaussian blur p=0.5, kernel 10% of the side); both pipelines
get the same parameters. ``--data`` takes an image folder with train/ (and test/) or a .tar.gz of
one, unpacked once into .bench/ as bench/train_cifar.py does; without the default CIFAR-10
tarball it falls back to synthetic random 32x32 images (the cost per image of both pipelines
does not depend on what the pixels show), and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from simclr_core.cli.common import run_cli  # noqa: E402
from simclr_core.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, ViewConfig  # noqa: E402
from simclr_core.hardware import autocast, describe  # noqa: E402
from simclr_core.runs.rundir import new_run  # noqa: E402
from simclr_core.training import Session, fit, prepare  # noqa: E402
from train_cifar import DEFAULT_DATA, image_folder  # noqa: E402

EPOCH_IMAGES = 50_000  # s/epoch is reported for a CIFAR-10-sized epoch
SYNTHETIC_IMAGES = 50_000
VIEWS = {
    "cifar": ViewConfig.cifar(),  # paper, appendix B.9
    "imagenet": ViewConfig.imagenet(),  # paper, appendix A
}


# ---------------------------------------------------------------- setup


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        default=None,
        help=f"image folder with train/ (and test/), a .tar.gz of one, or 'synthetic' "
        f"(default: {DEFAULT_DATA}, or synthetic images when it is missing)",
    )
    p.add_argument("--backbone", default="resnet18", choices=("resnet18", "resnet34", "resnet50", "resnet_mini"))
    p.add_argument("--batch-size", type=int, default=512, help="images per step (each gives a pair of views)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per pipeline")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="split the timed steps into this many rounds, alternating which pipeline goes first "
        "(use several on a machine whose speed drifts)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="untimed steps per pipeline before the timed ones (the reference runs at least 1: it starts the workers)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="DataLoader workers of the reference pipeline (default: os.cpu_count())",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--views", default="cifar", choices=tuple(VIEWS), help="augmentation setting of both pipelines")
    return p


def write_synthetic_folder(root: Path, n: int, side: int = 32) -> None:
    """``n`` random-noise PNGs in ``root``: just enough for ``prepare`` to load a split."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / f"{i:05d}.png")


def data_config(args: argparse.Namespace, scratch: Path) -> tuple[DataConfig, str]:
    """Where ``prepare`` finds the images, and a line describing them."""
    if args.data is None and not DEFAULT_DATA.exists():
        print(
            f"note: {DEFAULT_DATA} not found; falling back to {SYNTHETIC_IMAGES:,} synthetic random 32x32 "
            "images (per-image cost does not depend on the pixels). Pass --data DIR or a .tar.gz for real "
            "CIFAR-10."
        )
        args.data = "synthetic"
    if args.data == "synthetic":
        folder = scratch / "synthetic"
        write_synthetic_folder(folder, args.batch_size)  # replaced by the full set after prepare()
        return (
            DataConfig(dataset="folder", data_path=str(folder), data_dir=str(scratch / "data")),
            f"synthetic, {SYNTHETIC_IMAGES:,} random 32x32 images",
        )
    folder = image_folder(Path(args.data or DEFAULT_DATA).resolve(), REPO / ".bench")
    # Same cache folder as bench/train_cifar.py, so the decoded CIFAR-10 is reused.
    return (
        DataConfig(dataset="folder", data_path=str(folder), data_dir=str(REPO / ".bench" / "data")),
        f"image folder {folder}",
    )


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA only; CPU ops are synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- (a) the project's loop


def run_fit(s: Session, steps: int) -> tuple[int, float]:
    """Run ``simclr_core.training.fit`` for about ``steps`` steps; returns (steps run, seconds by fit's clock).

    ``steps_per_epoch`` is what the loop reads for an epoch's length; it is capped at the images
    one epoch holds, and more steps run as several epochs (so the count is rounded up to a multiple).
    """
    per_epoch = min(steps, len(s.images) // s.cfg.optim.batch_size)
    epochs = math.ceil(steps / per_epoch)
    s.steps_per_epoch, s.cfg.optim.epochs = per_epoch, epochs
    s.epoch = s.step = 0
    seen = len(s.run.metrics())
    sync(s.device)
    with contextlib.redirect_stdout(io.StringIO()):  # fit's "epoch 1/1 ..." lines go to train.log only
        outcome = fit(s)
    if outcome != "finished":
        raise RuntimeError(f"fit ended {outcome} ({s.stop_reason})")
    times = [m["epoch_time_s"] for m in s.run.metrics()[seen:] if "epoch_time_s" in m]
    assert len(times) == epochs, times
    return per_epoch * epochs, sum(times)


# ---------------------------------------------------------------- (b) the reference pipeline


class PairDataset(Dataset):
    """Images held as (N, H, W, 3) uint8; an item is two independent views of one PIL image."""

    def __init__(self, images: np.ndarray, transform: v2.Transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = Image.fromarray(self.images[i])
        return self.transform(img), self.transform(img)


def reference_transform(view_kwargs: dict[str, Any]) -> v2.Compose:
    """The SimCLR view in ``torchvision.transforms.v2`` on PIL images, with the project's parameters."""
    size, s = view_kwargs["size"], view_kwargs["jitter_strength"]
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(size, scale=view_kwargs["crop_scale"]),
        v2.RandomHorizontalFlip(view_kwargs["flip_prob"]),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=view_kwargs["jitter_prob"]),
        v2.RandomGrayscale(view_kwargs["grayscale_prob"]),
    ]
    if view_kwargs["blur_prob"] > 0:
        kernel = max(3, int(0.1 * size) | 1)  # as simclr_core.views (blur_kernel_frac=0.1)
        ops.append(
            v2.RandomApply([v2.GaussianBlur(kernel, sigma=view_kwargs["blur_sigma"])], p=view_kwargs["blur_prob"])
        )
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(ops)


def endless(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def reference_step(s: Session, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """One optimiser step of the session's model on a loader's batch of view pairs, the common way."""
    v1, v2 = (v.to(s.device, non_blocking=True) for v in (v1, v2))
    if s.device.type == "cuda":
        v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
    s.method.train()
    with autocast(s.device, s.amp_dtype):
        loss = s.method(v1, v2)
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(loss).backward()
    s.scaler.step(s.optimizer)
    s.scaler.update()
    return loss


class Reference:
    """The reference pipeline: a persistent loader and one training step of the common kind."""

    def __init__(self, s: Session, images: np.ndarray, workers: int):
        self.s, self.workers = s, workers
        loader = DataLoader(
            PairDataset(images, reference_transform(s.view_kwargs)),
            batch_size=s.cfg.optim.batch_size,
            shuffle=True,
            num_workers=workers,
            pin_memory=s.device.type == "cuda",
            persistent_workers=workers > 0,
            drop_last=True,
        )
        self.batches = endless(loader)

    def step(self) -> None:
        reference_step(self.s, *next(self.batches))

    def run(self, steps: int) -> tuple[int, float]:
        """Time about ``steps`` steps (rounded up to a multiple of the workers); returns (steps, seconds).

        The loader's W workers finish their batches at nearly the same moment, so batches arrive
        in bursts of W; a multiple of W makes the time independent of where in a burst it starts.
        """
        if self.workers > 0:
            steps = math.ceil(steps / self.workers) * self.workers
        sync(self.s.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.s.device)
        return steps, time.perf_counter() - t0


# ---------------------------------------------------------------- main


def result(steps: int, seconds: float, batch_size: int) -> dict[str, float]:
    """pairs/s and s/epoch from a timed stretch."""
    rate = steps * batch_size / seconds
    return {"steps": steps, "seconds": seconds, "pairs_per_s": rate, "s_per_epoch": EPOCH_IMAGES / rate}


def main(argv: list[str] | None = None) -> int:
    """Measure (a) and (b), print them side by side and a JSON line."""
    args = build_parser().parse_args(argv)
    for flag in ("batch_size", "steps", "rounds"):
        if getattr(args, flag) < 1:
            sys.exit(f"error: --{flag.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.workers < 0:
        sys.exit("error: --warmup and --workers must be 0 or more")

    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        scratch = Path(tmp)
        data_cfg, data_desc = data_config(args, scratch)
        cfg = TrainConfig(
            data=data_cfg,
            views=VIEWS[args.views],
            model=ModelConfig(backbone=args.backbone),
            optim=OptimConfig(epochs=1, batch_size=args.batch_size),
            run=RunConfig(name="throughput", runs_dir=str(scratch / "runs"), device=args.device, knn_every=0),
        )
        cfg.validate()
        run = new_run(cfg.run.runs_dir, cfg.run.name)
        s = prepare(cfg, run, resume=False)
        if args.data == "synthetic":  # prepare() loaded a batch of PNGs; train on the full synthetic set
            g = torch.Generator().manual_seed(0)
            full = torch.randint(0, 256, (SYNTHETIC_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=g)
            s.images = full.to(s.images.device)
        # The reference's copy, made before anything is timed: (N, H, W, 3) for PIL.
        images = np.ascontiguousarray(s.images.cpu().numpy().transpose(0, 2, 3, 1))
        n, side = len(s.images), s.images.shape[-1]
        B = args.batch_size
        cuda = s.device.type == "cuda"
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[s.amp_dtype]

        print(
            f"device: {describe(s.device)} | torch {torch.__version__} | python {platform.python_version()} "
            f"| {os.cpu_count()} CPU cores"
        )
        print(f"data: {data_desc}; {n:,} training images of {side}x{side}")
        print(
            f"model: {args.backbone}{' (CIFAR stem)' if s.arch['cifar_stem'] else ''}, batch {B}, "
            f"{cfg.optim.optimizer}, {precision}{', channels_last' if cuda else ''}; views: {args.views} "
            f"(s={s.view_kwargs['jitter_strength']}, blur p={s.view_kwargs['blur_prob']})"
        )
        print(
            f"warm-up {args.warmup} steps, then {args.steps} timed steps per pipeline"
            + (f" in {args.rounds} alternating rounds" if args.rounds > 1 else ""),
            flush=True,
        )

        ref = Reference(s, images, args.workers)
        per_round = math.ceil(args.steps / args.rounds)
        if args.workers > 0:  # both pipelines time the same number of steps (see Reference.run)
            per_round = math.ceil(per_round / args.workers) * args.workers
        totals = {"a": [0, 0.0], "b": [0, 0.0]}
        with open(run.log_path, "a") as log_file:
            s.log_file = log_file
            if args.warmup:
                run_fit(s, args.warmup)
            for _ in range(max(1, args.warmup)):  # at least one: the workers start on the first batch
                ref.step()
            # Rounds alternate which pipeline goes first, so a drift in the machine's speed (a busy
            # neighbour, clocks, the allocator warming up) falls on both alike.
            for r in range(args.rounds):
                for key in "ab" if r % 2 == 0 else "ba":
                    steps, seconds = run_fit(s, per_round) if key == "a" else ref.run(per_round)
                    totals[key][0] += steps
                    totals[key][1] += seconds
                    if args.rounds > 1:
                        print(f"  round {r + 1} ({key}): {steps * B / seconds:.1f} pairs/s", flush=True)
        a, b = result(*totals["a"], B), result(*totals["b"], B)

    ratio = a["pairs_per_s"] / b["pairs_per_s"]
    rows = [
        ("(a) simclr_core: fit, two_views on the device", a),
        (f"(b) reference: transforms.v2 on PIL, DataLoader, {args.workers} workers", b),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'pipeline':<{width}}  {'steps':>5}  {'pairs/s':>9}  {'s/epoch (50k)':>13}")
    for name, r in rows:
        print(f"{name:<{width}}  {r['steps']:>5}  {r['pairs_per_s']:>9.1f}  {r['s_per_epoch']:>13.1f}")
    print(f"ratio a/b: {ratio:.2f}x")
    print(
        json.dumps(
            {
                "device": describe(s.device),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "data": data_desc,
                "images": n,
                "side": side,
                "backbone": args.backbone,
                "batch_size": B,
                "precision": precision,
                "views": args.views,
                "workers": args.workers,
                "warmup": args.warmup,
                "rounds": args.rounds,
                "project": a,
                "reference": b,
                "ratio": ratio,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
