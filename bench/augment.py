"""Views/s of the SimCLR view transform: this project's batched ops vs torchvision's PIL pipeline (and kornia).

    python bench/augment.py                         # CPU: CIFAR-10 JPEGs from ../shared/data, batch 256
    python bench/augment.py --device cuda --batch-size 512 --images 20000

Every contender makes the same augmentation (the paper's CIFAR setting by default: random resized
crop (0.08, 1), flip 0.5, colour jitter s=0.5 with p=0.8, grayscale 0.2, no blur; ``--views
imagenet`` adds s=1 and blur p=0.5) from the same uint8 images:

- ours: ``simclr_core.views.simclr_view`` on a (B, 3, H, W) uint8 batch on the device.
- torchvision PIL: ``torchvision.transforms.v2`` on PIL images, one image at a time, as a
  DataLoader worker runs it; measured in one process (views/s per core) and through a DataLoader
  with ``--workers`` processes (the common way).
- kornia (when installed): ``kornia.augmentation`` on the same batch on the device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from simclr_core.data import datasets as data  # noqa: E402
from simclr_core.hardware import describe, resolve_device  # noqa: E402
from simclr_core.views import simclr_view  # noqa: E402
from train_cifar import DEFAULT_DATA, image_folder  # noqa: E402

SETTINGS = {"cifar": dict(jitter_strength=0.5, blur_prob=0.0), "imagenet": dict(jitter_strength=1.0, blur_prob=0.5)}


def load_images(path: Path, n: int) -> torch.Tensor:
    """(n, 3, 32, 32) uint8 CIFAR-10 training images, or the bundled digits when the archive is absent."""
    if path.exists():
        folder = image_folder(path.resolve(), REPO / ".bench")
        s = data.load_split("folder", "train", path=str(folder), data_dir=str(REPO / ".bench" / "data"), subset=n)
    else:
        print(f"note: {path} not found; using the bundled digits (32x32)")
        s = data.load_split("digits", "all")
    return s.images[:n].contiguous()


def timed(fn, n_views: int, repeat: int, sync) -> float:
    """Views/s of ``fn`` (which makes ``n_views`` views) after one warm-up call, best of ``repeat``."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return n_views / best


def torchvision_pipeline(size: int, s: float, blur: float):
    from torchvision.transforms import v2

    ops = [
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        v2.RandomGrayscale(0.2),
    ]
    if blur:
        k = max(3, int(0.1 * size) | 1)
        ops.append(v2.RandomApply([v2.GaussianBlur(k, sigma=(0.1, 2.0))], p=blur))
    return v2.Compose(ops + [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


class PILViews(torch.utils.data.Dataset):
    """Two views per PIL image, the way most SimCLR code feeds its DataLoader."""

    def __init__(self, images: torch.Tensor, transform):
        from PIL import Image

        self.pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
        self.t = transform

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, i: int):
        return self.t(self.pil[i]), self.t(self.pil[i])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--images", type=int, default=4096, help="images to augment per timed pass")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--views", choices=tuple(SETTINGS), default="cifar")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    dev = resolve_device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    images = load_images(args.data, args.images)
    n, size, B = len(images), images.shape[-1], args.batch_size
    knobs = SETTINGS[args.views]
    print(
        f"device: {describe(dev)} | torch {torch.__version__} | {n} images {size}x{size} | batch {B} | "
        f"views: {args.views} {knobs}"
    )
    results: dict[str, float] = {}

    on_dev = images.to(dev)
    g = torch.Generator(device=dev).manual_seed(0)

    def ours():
        for i in range(0, n, B):
            simclr_view(on_dev[i : i + B], generator=g, **knobs)

    results["ours (batched, simclr_core.views)"] = timed(ours, n, args.repeat, sync)

    tv = torchvision_pipeline(size, knobs["jitter_strength"], knobs["blur_prob"])
    ds = PILViews(images, tv)

    def pil_one_process():
        for i in range(n):
            tv(ds.pil[i])

    results["torchvision v2 PIL, 1 process"] = timed(pil_one_process, n, args.repeat, lambda: None)

    loader = torch.utils.data.DataLoader(
        ds, batch_size=B, num_workers=args.workers, persistent_workers=True, drop_last=False
    )

    def pil_loader():
        for _ in loader:
            pass

    # Each item holds two views.
    results[f"torchvision v2 PIL, DataLoader {args.workers} workers"] = timed(
        pil_loader, 2 * n, args.repeat, lambda: None
    )
    try:
        import kornia.augmentation as K
    except ImportError:
        print("kornia not installed: skipped (pip install kornia)")
    else:
        s = knobs["jitter_strength"]
        ops = [
            K.RandomResizedCrop((size, size), scale=(0.08, 1.0)),
            K.RandomHorizontalFlip(),
            K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=0.8),
            K.RandomGrayscale(p=0.2),
        ]
        if knobs["blur_prob"]:
            k = max(3, int(0.1 * size) | 1)
            ops.append(K.RandomGaussianBlur((k, k), (0.1, 2.0), p=knobs["blur_prob"]))
        kaug = K.AugmentationSequential(*ops).to(dev)

        def kornia_views():
            for i in range(0, n, B):
                kaug(on_dev[i : i + B].float().div(255))

        import kornia

        results[f"kornia {kornia.__version__} (batched)"] = timed(kornia_views, n, args.repeat, sync)

    ours_v = results["ours (batched, simclr_core.views)"]
    print(f"{'pipeline':<44} {'views/s':>10} {'ours is':>9}")
    for name, v in results.items():
        print(f"{name:<44} {v:>10,.0f} {ours_v / v:>8.1f}x")
    print(json.dumps({"device": describe(dev), "views": args.views, "batch": B, "views_per_s": results}))


if __name__ == "__main__":
    main()
