"""What the probe's label-free signals cost per monitor epoch, against one epoch of training (issue 20).

    python bench/signals_cost.py                       # resnet_mini, CIFAR's 32 px, the default probe of 2000
    python bench/signals_cost.py --backbone resnet18 --views 2 4 8

Times, on random 32 px images (the cost does not depend on what they show; k-means may stop a few
iterations earlier or later): (a) the probe's forward passes for 2 (before issue 20), 4 and 8 views
per image; (b) the signals' linear algebra for h and z, old (RankMe, alignment, uniformity) and new
(α-ReQ, LiDAR, pseudo-label kNN); (c) training steps at the CIFAR recipe's batch, scaled to one
CIFAR-10 epoch of 50,000 images. Each is the median of ``--repeat`` runs, interleaved, so a busy
machine slows them alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from simclr_core.evaluation import health as H  # noqa: E402
from simclr_core.explorer import probe  # noqa: E402
from simclr_core.methods import method_class  # noqa: E402
from simclr_core.models import Encoder  # noqa: E402
from simclr_core.views import two_views  # noqa: E402

CIFAR_TRAIN = 50_000


def timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet_mini")
    ap.add_argument("--probe", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=512, help="training batch (the CIFAR recipes: 512)")
    ap.add_argument("--views", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--steps", type=int, default=3, help="training steps timed (after one warm-up)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    view = {"size": 32, "crop_scale": (0.08, 1.0), "jitter_strength": 0.5, "blur_prob": 0.0}
    enc = Encoder(a.backbone, cifar_stem=True)
    images = torch.randint(0, 256, (a.probe, 3, 32, 32), dtype=torch.uint8)
    cpu = torch.device("cpu")

    method = method_class("simclr")(enc, temperature=0.5)  # type: ignore[call-arg]
    opt = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)
    batch = torch.randint(0, 256, (a.batch, 3, 32, 32), dtype=torch.uint8)

    def step() -> None:
        v1, v2 = two_views(batch, **view)
        loss = method(v1, v2)
        opt.zero_grad()
        loss.backward()
        opt.step()

    real_health = probe.health
    forward: dict[int, list[float]] = {v: [] for v in a.views}
    step_s: list[float] = []
    outs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        probe.health = lambda *args: outs.update(args=args) or {}  # (a): the forward passes alone
        try:
            for _ in range(a.repeat):
                method.train()
                step()  # warm-up
                step_s.append(statistics.median(timed(step) for _ in range(a.steps)))
                for v in a.views:
                    forward[v].append(timed(lambda v=v: probe.record(enc, images, view, Path(d), 1, cpu, views=v)))
        finally:
            probe.health = real_health
    h, z, z1, z2, vh, vz = outs["args"]  # the last run's embeddings (the largest view count)
    vh4, vz4 = vh[:, :4], vz[:, :4]
    parts = {
        "rankme h+z": lambda: (H.rankme(h), H.rankme(z)),
        "alignment+uniformity": lambda: (H.alignment(z1, z2), H.uniformity(z)),
        "areq h+z": lambda: (H.areq(h), H.areq(z)),
        "pseudo_knn h+z": lambda: (H.pseudo_knn(h), H.pseudo_knn(z)),
        "lidar h+z (4 views)": lambda: (H.lidar(vh4), H.lidar(vz4)),
    }
    if vh.shape[1] != 4:
        parts[f"lidar h+z ({vh.shape[1]} views)"] = lambda: (H.lidar(vh), H.lidar(vz))
    algebra = {k: statistics.median(timed(f) for _ in range(a.repeat)) for k, f in parts.items()}

    epoch = statistics.median(step_s) * CIFAR_TRAIN / a.batch
    print(
        f"{a.backbone} (h {h.shape[1]}, z {z.shape[1]}), probe {a.probe} images at 32 px, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"training step, batch {a.batch}: {statistics.median(step_s):.2f} s -> one CIFAR-10 epoch {epoch:.0f} s")
    for v, ts in forward.items():
        t = statistics.median(ts)
        print(f"probe forward passes, {v} views: {t:.2f} s ({100 * t / epoch:.2f}% of an epoch)")
    for k, t in algebra.items():
        print(f"{k}: {t:.3f} s ({100 * t / epoch:.2f}% of an epoch)")
    new = statistics.median(forward[4]) - statistics.median(forward[2]) if {2, 4} <= forward.keys() else 0.0
    new += algebra["areq h+z"] + algebra["pseudo_knn h+z"] + algebra["lidar h+z (4 views)"]
    print(f"added by issue 20 (2 more views + the new signals): {new:.2f} s ({100 * new / epoch:.2f}% of an epoch)")


if __name__ == "__main__":
    main()
