"""Time to accuracy: kNN top-1 on the CIFAR-10 test split against wall-clock training time.

    python bench/time_to_accuracy.py --backbone resnet_mini --subset 5000 --epochs 8 --minutes 4   # CPU check
    python bench/time_to_accuracy.py --epochs 300 --minutes 9.5                # one GPU, first 10-minute call
    python bench/time_to_accuracy.py --resume NAME --minutes 9.5               # the next call continues it
    python bench/time_to_accuracy.py --config configs/simclr-cifar10-speedrun.yaml --minutes 9   # the speedrun

ResNet-18 (CIFAR stem) on the CIFAR-10 JPEGs (``../shared/data/cifar10-jpg.tar.gz``), the
paper's CIFAR views (s = 0.5, no blur), SGD or LARS, the kNN monitor (k = 200, T = 0.1, bank =
the training images, query = the 10k test images) every ``--knn-every`` epochs. The run stops
cleanly (STOP file) when ``--minutes`` of wall-clock time have passed; the cosine schedule is
set by ``--epochs``, so pick epochs that roughly fill the budget (seconds/epoch from
bench/throughput.py). Prints one row per kNN measurement: minutes of training so far (the
monitor's own time excluded), epochs, kNN top-1; then the minutes at which kNN first reached
80, 85 and 90% (``kNN 85%: 6.41`` or ``kNN 90%: not reached``).

``--config`` takes a recipe (its model, method, optimiser, views and monitor); the flags given
beside it override it, and the data is always the CIFAR-10 folder of ``--data``.
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


def default_config() -> TrainConfig:
    """The settings without a recipe: ResNet-18 (CIFAR stem), the paper's CIFAR views, SGD, the monitor every
    5 epochs."""
    return TrainConfig(
        views=ViewConfig.cifar(),
        model=ModelConfig(backbone="resnet18", cifar_stem=True),
        method=MethodConfig(temperature=0.5),
        optim=OptimConfig(epochs=300, batch_size=512, optimizer="sgd"),
        run=RunConfig(knn_every=5, log_every=20),
    )


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


THRESHOLDS = (80.0, 85.0, 90.0)


def minutes_to(rows: list[tuple[float, int, float]], threshold: float) -> float | None:
    """Training minutes at the first kNN measurement at or above ``threshold`` (None: never)."""
    return next((minutes for minutes, _, knn in rows if knn >= threshold), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget of this call")
    p.add_argument("--config", type=Path, help="a recipe (configs/*.yaml); the flags below override it")
    p.add_argument("--name", help="run name [default: tta-<backbone>-b<batch>-<time>]")
    # None: the recipe's value, else the default in brackets
    p.add_argument("--epochs", type=int, help="length of the cosine schedule [300]")
    p.add_argument("--subset", type=int, help="training images [0: all 50k]")
    p.add_argument("--batch-size", type=int, help="[512]")
    p.add_argument("--backbone", help="[resnet18]")
    p.add_argument("--optimizer", choices=("sgd", "lars"), help="[sgd]")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--temperature", type=float, help="[0.5]")
    p.add_argument("--knn-every", type=int, help="[5]")
    p.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), help="[auto]")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="[off]")
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
        cfg = TrainConfig.load(args.config) if args.config else default_config()
        given = {
            ("optim", "epochs"): args.epochs,
            ("optim", "batch_size"): args.batch_size,
            ("optim", "optimizer"): args.optimizer,
            ("optim", "lr"): args.lr,
            ("optim", "precision"): args.precision,
            ("model", "backbone"): args.backbone,
            ("method", "temperature"): args.temperature,
            ("run", "knn_every"): args.knn_every,
            ("run", "compile"): args.compile,
        }
        for (section, key), value in given.items():
            if value is not None:
                setattr(getattr(cfg, section), key, value)
        subset = args.subset if args.subset is not None else cfg.data.subset
        cfg.data = DataConfig(
            dataset="folder", data_path=str(folder), data_dir=str(REPO / ".bench" / "data"), subset=subset or None
        )
        name = args.name or f"tta-{cfg.model.backbone}-b{cfg.optim.batch_size}-{time.strftime('%Y%m%d-%H%M%S')}"
        cfg.run.name, cfg.run.runs_dir, cfg.run.device = name, args.runs_dir, args.device
        cfg.run.knn_max_bank = subset or None
        cfg.validate()
        run = RunDir(Path(args.runs_dir) / name)
        resume = False
    timer = stop_after(run, args.minutes)
    train(cfg, resume=resume)
    timer.cancel()
    print(f"\nrun: {run.name} ({run.status().get('message', '')})")
    print(f"{'minutes':>8}  {'epochs':>6}  {'kNN top-1':>9}")
    rows = table(run)
    for minutes, epoch, knn in rows:
        print(f"{minutes:>8.2f}  {epoch:>6}  {knn:>9.2f}")
    for threshold in THRESHOLDS:
        at = minutes_to(rows, threshold)
        print(f"kNN {threshold:.0f}%: " + ("not reached" if at is None else f"{at:.2f}") + " minutes of training")


if __name__ == "__main__":
    main()
