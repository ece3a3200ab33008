"""Benchmark: how far the "over training" map moves when UMAP starts from the last frame's layout.

Three blobs of 20 near-duplicate points in 8-D (tests/test_projection.py's data). Frame 2 is frame 1
rotated in embedding space, so nothing about it changed and a stable map should not move; then frame 2
is projected again from its own layout (a run that adds a frame). For each UMAP setting of an
initialised frame, prints how far the blob centres and the points moved, as a fraction of the map's
spread (mean distance from its centre). A mirrored or turned picture moves 1 to 2.

    python bench/trajectory.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import umap
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simclr_core.explorer import projection  # noqa: E402

SETTINGS = [(200, 1.0), (200, 0.1), (100, 0.25), (100, 0.1)]  # (n_epochs, learning_rate) of a started frame


def blobs() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 5
    x = (np.repeat(centres, 20, axis=0) + rng.normal(size=(60, 8)) * 0.1).astype(np.float32)
    q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(8, 8)))
    return [x, x @ q.astype(np.float32)]


def moved(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(blob centres, points) moved from ``a`` to ``b``."""
    centres = np.linalg.norm(a.reshape(3, 20, 2).mean(1) - b.reshape(3, 20, 2).mean(1), axis=1).mean()
    return float(centres), float(np.linalg.norm(a - b, axis=1).mean())


def main() -> None:
    frames = blobs()
    real_init = umap.UMAP.__init__
    print("n_epochs  lr    | rotated: centres  points | re-projected: centres  points   (fraction of the spread)")
    for epochs, lr in SETTINGS:

        def init(self, *args, _e=epochs, _lr=lr, **kw):  # the setting under test, for started frames only
            if "init" in kw:
                kw.update(n_epochs=_e, learning_rate=_lr)
            real_init(self, *args, **kw)

        umap.UMAP.__init__ = init
        try:
            with threadpool_limits(1, user_api="openmp"):  # as the tests run it
                a, b = projection.trajectory(frames, "umap", 2, seed=0, n_neighbors=10)
                [c] = projection.trajectory(frames[1:], "umap", 2, seed=0, previous=b, n_neighbors=10)
        finally:
            umap.UMAP.__init__ = real_init
        spread = float(np.linalg.norm(a - a.mean(0), axis=1).mean())
        (ab_c, ab_p), (bc_c, bc_p) = moved(a, b), moved(b, c)
        print(
            f"{epochs:8d}  {lr:<5g} | {ab_c / spread:16.3f} {ab_p / spread:7.3f} | "
            f"{bc_c / spread:21.3f} {bc_p / spread:7.3f}"
        )


if __name__ == "__main__":
    main()
