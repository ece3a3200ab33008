"""Benchmark: SimCLR on real CIFAR-10 JPEGs; prints images/s and kNN top-1 after E epochs.

    python bench/train_cifar.py                       # CPU default: ResNet-18, 5k-image subset, 3 epochs
    python bench/train_cifar.py --subset 0 --batch-size 512 --epochs 30 --max-minutes 9.5   # one GPU

``--data`` takes the image-folder layout (train/<class>/*.jpg, test/<class>/*.jpg) or a
``.tar.gz`` of it, which is unpacked once into ``.bench/`` (git-ignored). kNN: weighted
(k=200, T=0.1), cosine on backbone features, bank = the training images used, query = the
10k test split. The same kNN of a randomly initialised backbone is printed as the baseline.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tarfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simclr_core.cli.train import train  # noqa: E402
from simclr_core.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, ViewConfig  # noqa: E402
from simclr_core.evaluation.run import evaluate_run  # noqa: E402
from simclr_core.hardware import describe, resolve_device  # noqa: E402
from simclr_core.runs.rundir import RunDir  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def image_folder(path: Path, scratch: Path) -> Path:
    """The folder holding train/ and test/; a .tar.gz is unpacked into ``scratch`` once."""
    if path.is_dir():
        return path
    if not path.is_file():
        sys.exit(f"error: {path} not found: pass --data DIR (train/ and test/ class folders) or a .tar.gz of it")
    out = scratch / path.name.replace(".tar.gz", "")
    if not (out / "train").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path) as tar:
            tar.extractall(out, filter="data")
    roots = [p.parent for p in out.rglob("train") if p.is_dir() and (p.parent / "test").is_dir()]
    if not roots:
        sys.exit(f"error: {path} holds no train/ and test/ folders")
    return roots[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 image folder or .tar.gz")
    p.add_argument("--subset", type=int, default=5000, help="training images (0: all 50k)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "lars"))
    p.add_argument("--lr", type=float, default=None, help="default: 0.06*B/256 (sgd), 0.3*B/256 (lars)")
    p.add_argument("--knn-every", type=int, default=0, help="monitor every N epochs (0: only after the last)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly (STOP file) after this long")
    p.add_argument("--device", default="auto")
    p.add_argument("--runs-dir", default=str(REPO / ".bench" / "runs"))
    p.add_argument("--name", default=None)
    args = p.parse_args()

    folder = image_folder(args.data.resolve(), REPO / ".bench")
    device = resolve_device(args.device)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = args.name or f"bench-{args.backbone}-{args.subset or 'all'}-b{args.batch_size}-{stamp}"
    cfg = TrainConfig(
        data=DataConfig(
            dataset="folder", data_path=str(folder), data_dir=str(REPO / ".bench" / "data"), subset=args.subset or None
        ),
        # The paper's CIFAR-10 views: colour strength 0.5, no blur.
        views=ViewConfig.cifar(),
        model=ModelConfig(backbone=args.backbone),
        optim=OptimConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr),
        run=RunConfig(
            name=name,
            runs_dir=args.runs_dir,
            device=args.device,
            knn_every=args.knn_every or args.epochs,
            knn_max_bank=args.subset or None,
            log_every=10,
        ),
    )
    timer = None
    if args.max_minutes:
        run_dir = RunDir(Path(args.runs_dir) / name)
        timer = threading.Timer(args.max_minutes * 60, lambda: run_dir.path.is_dir() and run_dir.request_stop())
        timer.daemon = True
        timer.start()
    t0 = time.time()
    run = train(cfg)
    wall = time.time() - t0
    if timer:
        timer.cancel()

    epochs = run.metrics("epoch")
    knn = [m for m in epochs if "knn_top1" in m]
    train_s = sum(m["epoch_time_s"] for m in epochs)
    ips = sum(m["images_per_s"] * m["epoch_time_s"] for m in epochs) / max(train_s, 1e-9)
    baseline = evaluate_run(run, random_init=True, probe=False, max_bank=args.subset or None, device=args.device)
    print()
    print(f"device: {describe(device)} | torch {torch.__version__} | python {platform.python_version()}")
    print(f"run: {run.path}")
    print(f"data: CIFAR-10 JPEG folder, {args.subset or 50000} train images, kNN query = 10,000 test images")
    print(
        f"model: {args.backbone} (CIFAR stem), batch {args.batch_size}, {args.optimizer}, "
        f"views s=0.5 no blur, tau={cfg.method.temperature}"
    )
    print(f"{'epoch':>5}  {'loss':>7}  {'img/s':>7}  {'s/epoch':>8}  {'kNN top-1':>9}")
    for m in epochs:
        k = f"{m['knn_top1']:.2f}" if "knn_top1" in m else ""
        print(f"{m['epoch']:>5}  {m['epoch_loss']:>7.4f}  {m['images_per_s']:>7.1f}  {m['epoch_time_s']:>8.1f}  {k:>9}")
    print(
        f"training: {len(epochs)} epochs, {train_s:.0f} s, {ips:.1f} images/s ({2 * ips:.1f} views/s); "
        f"wall {wall:.0f} s with data loading and kNN"
    )
    if knn:
        print(
            f"kNN top-1 after {knn[-1]['epoch']} epochs: {knn[-1]['knn_top1']:.2f}% "
            f"(random-init baseline {baseline['knn_top1']:.2f}%, chance 10%)"
        )
    print(
        json.dumps(
            {
                "epochs": len(epochs),
                "images_per_s": ips,
                "knn_top1": knn[-1]["knn_top1"] if knn else None,
                "baseline_knn_top1": baseline["knn_top1"],
            }
        )
    )


if __name__ == "__main__":
    main()
