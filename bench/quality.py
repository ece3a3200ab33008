"""Does the batched view pipeline learn as well as the common one? kNN per epoch, side by side.

    python bench/quality.py                                   # CPU: resnet_mini, 5k CIFAR-10 images, 10 epochs
    python bench/quality.py --backbone resnet18 --subset 0 --epochs 20 --batch-size 512   # one GPU

Same data, model, initial weights, optimiser, lr schedule, batch size and view parameters; only
the view pipeline differs:
(a) this project's ``simclr_core.cli.train`` (uint8 batch indexed on the device, ``two_views``), run
    with seed 0 and, for the run-to-run noise, seed 1;
(b) the reference of bench/throughput.py: ``torchvision.transforms.v2`` on PIL images in a
    DataLoader, driving the same model and optimiser (seed 0).
After every epoch each gets the same kNN monitor (k = 200, T = 0.1, bank = the training images,
query = the 10k CIFAR-10 test images).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from simclr_core.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, ViewConfig  # noqa: E402
from simclr_core.hardware import describe, resolve_device  # noqa: E402
from simclr_core.optim import lr_at  # noqa: E402
from simclr_core.runs.rundir import new_run  # noqa: E402
from simclr_core.training import prepare, train  # noqa: E402
from simclr_core.training.loop import knn_monitor  # noqa: E402
from throughput import PairDataset, reference_step, reference_transform  # noqa: E402
from train_cifar import DEFAULT_DATA, image_folder  # noqa: E402


def config(args: argparse.Namespace, folder: Path, runs: Path, name: str, seed: int) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(
            dataset="folder", data_path=str(folder), data_dir=str(REPO / ".bench" / "data"), subset=args.subset or None
        ),
        views=ViewConfig.cifar(),
        model=ModelConfig(backbone=args.backbone, cifar_stem=args.backbone != "resnet_mini"),
        optim=OptimConfig(epochs=args.epochs, batch_size=args.batch_size),
        run=RunConfig(
            name=name,
            runs_dir=str(runs),
            device=args.device,
            seed=seed,
            knn_every=1,
            knn_max_bank=args.subset or None,
            log_every=50,
        ),
    )


def ours(cfg: TrainConfig) -> list[float]:
    run = train(cfg)
    return [m["knn_top1"] for m in run.metrics() if "knn_top1" in m]


def reference(cfg: TrainConfig, workers: int) -> list[float]:
    """The common pipeline driving the project's model, optimiser and schedule; kNN after every epoch."""
    run = new_run(cfg.run.runs_dir, cfg.run.name)
    cfg.save(run.config_path)
    s = prepare(cfg, run, resume=False)  # same seed: same initial weights as ours
    images = s.images.cpu().permute(0, 2, 3, 1).numpy()  # (N, H, W, 3), as torchvision datasets hold them
    torch.manual_seed(cfg.run.seed)
    loader = DataLoader(
        PairDataset(images, reference_transform(s.view_kwargs)),
        batch_size=cfg.optim.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=s.device.type == "cuda",
    )
    warmup = s.warmup_steps
    knn = []
    for _ in range(cfg.optim.epochs):
        s.method.train()
        for v1, v2 in loader:
            lr = lr_at(s.step, s.total_steps, warmup, s.cfg.optim.lr)
            for g in s.optimizer.param_groups:
                g["lr"] = lr
            reference_step(s, v1, v2)
            s.step += 1
        knn.append(knn_monitor(s)["knn_top1"])
        print(f"reference epoch {len(knn)} kNN top-1 {knn[-1]:.2f}%")
    return knn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--backbone", default="resnet_mini")
    p.add_argument("--subset", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    folder = image_folder(args.data.resolve(), REPO / ".bench")
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        a0 = ours(config(args, folder, runs, "ours-seed0", 0))
        a1 = ours(config(args, folder, runs, "ours-seed1", 1))
        b0 = reference(config(args, folder, runs, "reference-seed0", 0), args.workers)
        device = describe(resolve_device(args.device))
    print(
        f"\ndevice: {device} | {args.backbone} | {args.subset or 50000} CIFAR-10 training images | batch "
        f"{args.batch_size} | kNN query: 10k test images"
    )
    print(f"{'epoch':>5}  {'ours s0':>8}  {'ours s1':>8}  {'reference s0':>12}  {'ours s0 - ref':>13}")
    for e, (x, y, z) in enumerate(zip(a0, a1, b0, strict=False), 1):
        print(f"{e:>5}  {x:>8.2f}  {y:>8.2f}  {z:>12.2f}  {x - z:>+13.2f}")
    noise = max(abs(x - y) for x, y in zip(a0, a1, strict=False))
    print(
        f"final: ours {a0[-1]:.2f} / {a1[-1]:.2f} (seeds 0/1), reference {b0[-1]:.2f}; "
        f"largest seed-to-seed gap of ours over the epochs: {noise:.2f} points"
    )


if __name__ == "__main__":
    main()
