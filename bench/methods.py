"""SimCLR, MoCo v2 and BYOL after the same budget on CIFAR-10 JPEGs: kNN top-1 per epoch, side by side.

    python bench/methods.py                                        # CPU: resnet_mini, 5k images, 15 epochs
    python bench/methods.py --backbone resnet18 --subset 0 --epochs 100 --batch-size 512 --queue-size 4096  # GPU
    python bench/methods.py --heads simclr                         # all three on SimCLR's head, as before

Every method gets the same data, backbone, views (the paper's CIFAR setting: colour strength 0.5,
no blur), optimiser (SGD, lr 0.06*B/256, cosine), batch, epochs and seed; each keeps its own
defaults for what only it has: its paper's projection head (``simclr_core.heads``: SimCLR
BN-everywhere -> 128, MoCo v2 no BN -> 128, BYOL 2x-wide hidden with BN -> 256, and BYOL's
predictor), tau 0.5 SimCLR / 0.2 MoCo v2, MoCo's m = 0.99 and queue, BYOL's m = 0.99 -> 1 cosine.
``--heads simclr`` gives all three SimCLR's head (what runs had before per-method heads). kNN:
k = 200, T = 0.1, cosine on backbone features, bank = the training images, query = the 10k test
images, after every ``--knn-every`` epochs; the random-init backbone's kNN is printed as the floor.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from simclr_core import heads  # noqa: E402
from simclr_core.cli.train import train  # noqa: E402
from simclr_core.config import DataConfig, MethodConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, ViewConfig  # noqa: E402
from simclr_core.evaluation.run import evaluate_run  # noqa: E402
from simclr_core.hardware import describe, resolve_device  # noqa: E402
from simclr_core.methods import METHODS, method_class  # noqa: E402
from train_cifar import DEFAULT_DATA, image_folder  # noqa: E402


def config(args: argparse.Namespace, folder: Path, runs: Path, method: str) -> TrainConfig:
    head = method_class(method).head if args.heads == "own" else "simclr"
    spec = heads.SPECS[head]
    # the head's output size and batch norm given outright, so the run is the same whatever the
    # config's defaults are
    model = ModelConfig(
        backbone=args.backbone, cifar_stem=args.backbone != "resnet_mini", proj_out_dim=spec.out_dim, proj_bn=spec.bn
    )
    model.head = head
    return TrainConfig(
        data=DataConfig(
            dataset="folder", data_path=str(folder), data_dir=str(REPO / ".bench" / "data"), subset=args.subset or None
        ),
        views=ViewConfig.cifar(),
        model=model,
        method=MethodConfig(name=method, queue_size=args.queue_size),
        optim=OptimConfig(epochs=args.epochs, batch_size=args.batch_size),
        run=RunConfig(
            name=method,
            runs_dir=str(runs),
            device=args.device,
            seed=args.seed,
            num_threads=args.num_threads,
            knn_every=args.knn_every,
            knn_max_bank=args.subset or None,
            log_every=50,
        ),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAR-10 image folder or .tar.gz")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--backbone", default="resnet_mini")
    p.add_argument("--subset", type=int, default=5000, help="training images (0: all 50k)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--queue-size",
        type=int,
        default=2048,
        help="MoCo's K; keep it below the number of training images (else an image's own older "
        "keys sit in the queue as negatives)",
    )
    p.add_argument(
        "--heads",
        choices=("own", "simclr"),
        default="own",
        help="own: each method's paper head; simclr: SimCLR's head for all three",
    )
    p.add_argument("--knn-every", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    args = p.parse_args()
    folder = image_folder(args.data.resolve(), REPO / ".bench")

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="methods-") as tmp:
        runs = Path(tmp)
        for method in args.methods:
            t0 = time.time()
            run = train(config(args, folder, runs, method))
            epochs = run.metrics("epoch")
            results[method] = {
                "knn": {m["epoch"]: m["knn_top1"] for m in epochs if "knn_top1" in m},
                "loss": epochs[-1]["epoch_loss"],
                "train_s": sum(m["epoch_time_s"] for m in epochs),
                "wall_s": time.time() - t0,
            }
            print(f"{method}: kNN {results[method]['knn']}", flush=True)
        floor = evaluate_run(run, random_init=True, probe=False, max_bank=args.subset or None, device=args.device)[
            "knn_top1"
        ]
    device = describe(resolve_device(args.device))

    print(f"\ndevice: {device} | torch {torch.__version__} | python {platform.python_version()}")
    print(
        f"data: CIFAR-10 JPEGs, {args.subset or 50000} training images, kNN query = 10,000 test images | "
        f"{args.backbone}, batch {args.batch_size}, {args.epochs} epochs, SGD, seed {args.seed}, "
        f"heads: {args.heads}"
    )
    knn_epochs = sorted({e for r in results.values() for e in r["knn"]})
    head = "".join(f"  {'ep ' + str(e):>7}" for e in knn_epochs)
    print(f"{'method':<8}{head}  {'last loss':>9}  {'train s':>8}")
    for method, r in results.items():
        cells = "".join(f"  {r['knn'].get(e, float('nan')):>7.2f}" for e in knn_epochs)
        print(f"{method:<8}{cells}  {r['loss']:>9.4f}  {r['train_s']:>8.0f}")
    print(f"random-init backbone: kNN top-1 {floor:.2f}% (chance 10%)")
    print(
        json.dumps(
            {
                "device": device,
                "args": {k: str(v) for k, v in vars(args).items()},
                "results": results,
                "random_init_knn_top1": floor,
            }
        )
    )


if __name__ == "__main__":
    main()
