"""Time to accuracy: kNN top-1 on the CIFAR-10 test split against wall-clock training time.

    python bench/time_to_accuracy.py --backbone resnet_mini --subset 5000 --epochs 8 --minutes 4   # CPU check
    python bench/time_to_accuracy.py --epochs 300 --minutes 9.5                # one GPU, first 10-minute call
    python bench/time_to_accuracy.py --resume NAME --minutes 9.5               # the next call continues it

ResNet-18 (CIFAR stem) on the CIFAR-10 JPEGs (``../shared/data/cifar10-jpg.tar.gz``), the
paper's CIFAR views (s = 0.5, no blur), SGD or LARS, the kNN monitor (k = 200, T = 0.1, bank =
the training images, query = the 10k test images) every ``--knn-every`` epochs. The run stops
cleanly (STOP file) when ``--minutes`` of wall-clock time have passed; the cosine schedule is
set by ``--epochs``, so pick epochs that roughly fill the budget (seconds/epoch from
bench/throughput.py). Prints one row per kNN measurement: minutes of training so far (the
monitor's own time excluded), epochs, kNN top-1.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from simclr_core.cli.train import train  # noqa: E402
from simclr_core.config import (  # noqa: E402
    DataConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    ViewConfig,
)
from simclr_core.hardware import describe, resolve_device  # noqa: E402
from simclr_core.runs.rundir import RunDir, open_run  # noqa: E402
from train_cifar import DEFAULT_DATA, image_folder  # noqa: E402


def stop_after(run: RunDir, minutes: float) -> threading.Timer:
    """Ask the run to stop (after a checkpoint) once ``minutes`` have passed."""
    timer = threading.Timer(minutes * 60, lambda: run.path.is_dir() and run.request_stop())
    timer.daemon = True
    timer.start()
    return timer


def table(run: RunDir) -> list[tuple[float, int, float]]:
    """(training minutes, epoch, kNN top-1) for every kNN measurement of the run."""
    rows, train_s = [], 0.0
    for m in run.metrics("epoch"):
        train_s += m["epoch_time_s"]
        if "knn_top1" in m:
            rows.append((train_s / 60, m["epoch"], m["knn_top1"]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget of this call")
    p.add_argument("--epochs", type=int, default=300, help="length of the cosine schedule")
    p.add_argument("--subset", type=int, default=0, help="training images (0: all 50k)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "lars"))
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--knn-every", type=int, default=5)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--runs-dir", default=str(REPO / ".bench" / "runs"))
    p.add_argument("--resume", metavar="NAME", help="continue this run for another --minutes")
    args = p.parse_args()
    print(f"device: {describe(resolve_device(args.device))}")
    if args.resume:
        run = open_run(args.runs_dir, args.resume)
        cfg = run.config()
        cfg.run.device = args.device
        resume = True
    else:
        folder = image_folder(args.data.resolve(), REPO / ".bench")
        name = f"tta-{args.backbone}-b{args.batch_size}-{time.strftime('%Y%m%d-%H%M%S')}"
        cfg = TrainConfig(
            data=DataConfig(
                dataset="folder",
                data_path=str(folder),
                data_dir=str(REPO / ".bench" / "data"),
                subset=args.subset or None,
            ),
            views=ViewConfig.cifar(),
            model=ModelConfig(backbone=args.backbone, cifar_stem=True),
            method=MethodConfig(temperature=args.temperature),
            optim=OptimConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                optimizer=args.optimizer,
                lr=args.lr,
            ),
            run=RunConfig(
                name=name,
                runs_dir=args.runs_dir,
                device=args.device,
                knn_every=args.knn_every,
                knn_max_bank=args.subset or None,
                log_every=20,
                compile=args.compile,
            ),
        )
        run = RunDir(Path(args.runs_dir) / name)
        resume = False
    timer = stop_after(run, args.minutes)
    train(cfg, resume=resume)
    timer.cancel()
    print(f"\nrun: {run.name} ({run.status().get('message', '')})")
    print(f"{'minutes':>8}  {'epochs':>6}  {'kNN top-1':>9}")
    for minutes, epoch, knn in table(run):
        print(f"{minutes:>8.2f}  {epoch:>6}  {knn:>9.2f}")


if __name__ == "__main__":
    main()
