"""The run-time estimate against the real run (issue 16).

    python bench/estimate.py --config configs/cpu-demo.yaml                   # estimate, then the real run
    python bench/estimate.py --config configs/simclr-cifar10-resnet18.yaml --no-run --full-step \\
        --monitor-fraction 0.1 --dataset folder --data-path /tmp/cifar --data-dir /tmp/cifar-data
                                    # estimate, one real full step, and a tenth of a monitor pass

Prints the estimate (``simclr_core.training.estimate``: what ``simclr-train --estimate`` and the ``estimate``
job show), the load average before and after, and then either the real run's wall time (``python -m
simclr_core.cli.train`` in a subprocess, into a temporary runs folder, with its training seconds from
``metrics.jsonl``), or, for runs too long to make here, the time of one real step at the full batch
beside the estimate's per-step figure (which a CPU may have scaled up from part of a batch), and a
monitor pass timed on a larger sample than the estimate's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simclr_core.cli.common import add_config_args, config_from_args  # noqa: E402
from simclr_core.runs.rundir import RunDir  # noqa: E402
from simclr_core.training.estimate import estimate  # noqa: E402


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def full_step(cfg, monitor_fraction: float) -> tuple[float, float | None]:
    """Seconds of one real training step at the full batch, after one warm-up step (as training runs
    them), and of one monitor pass scaled up from ``monitor_fraction`` of its images (None: not measured)."""
    from simclr_core.training.estimate import _endless, _timed
    from simclr_core.training.loop import monitor, train_step
    from simclr_core.training.session import prepare

    with tempfile.TemporaryDirectory() as scratch:
        s = prepare(cfg, RunDir(scratch), resume=False)
        feed = _endless(s)
        train_step(s, next(feed))
        seconds = _timed(s, lambda: train_step(s, next(feed)))
        feed.close()
        if not monitor_fraction or (s.knn_sets is None and s.probe_images is None):
            return seconds, None
        knn, probe, s.epoch = s.knn_sets, s.probe_images, 1
        whole = (len(knn[0]) + len(knn[1]) if knn else 0) + 3 * (len(probe) if probe is not None else 0)
        passes = 0
        for f in (0.0, monitor_fraction):  # a pass on 16 images of each part pays the one-off costs
            s.knn_sets = tuple(part.subset(max(16, round(f * len(part))), 0) for part in knn) if knn else None
            s.probe_images = probe[: max(16, round(f * len(probe)))] if probe is not None else None
            k = len(s.knn_sets[0]) + len(s.knn_sets[1]) if s.knn_sets else 0
            passes = k + 3 * (len(s.probe_images) if s.probe_images is not None else 0)
            took = _timed(s, lambda: monitor(s))
    return seconds, took * whole / passes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--no-run", action="store_true", help="estimate only (the run is too long to make here)")
    p.add_argument("--full-step", action="store_true", help="also time one real step at the full batch")
    p.add_argument(
        "--monitor-fraction",
        type=float,
        default=0.0,
        help="with --full-step: also time the monitor on this fraction of its images",
    )
    add_config_args(p, only=("data", "optim", "run"))
    args = p.parse_args()
    cfg, _ = config_from_args(args)
    print(f"load average before: {_load()}")
    est = estimate(cfg)
    print(est.describe())
    print(
        f"measured {est.measured_steps} step(s) of {est.measured_batch} images in {est.measure_s:.1f} s; "
        f"step {est.step_s:.3f} s, monitor {est.monitor_s:.2f} s, checkpoint {est.checkpoint_s:.3f} s, "
        f"start {est.start_s:.2f} s; total {est.total_s:.0f} s"
    )
    print(f"load average after the estimate: {_load()}")
    if args.full_step:
        real, monitor = full_step(cfg, args.monitor_fraction)
        print(f"one real step at batch {cfg.optim.batch_size}: {real:.2f} s (estimate {est.step_s:.2f} s)")
        if monitor is not None:
            print(
                f"monitor pass from {args.monitor_fraction:.0%} of its images: {monitor:.0f} s "
                f"(estimate {est.monitor_s:.0f} s)"
            )
    if args.no_run:
        return
    with tempfile.TemporaryDirectory() as runs:
        ours = {"--no-run", "--full-step", "--monitor-fraction", str(args.monitor_fraction)}
        flags = [a for a in sys.argv[1:] if a not in ours]  # train's own flags
        cmd = [sys.executable, "-m", "simclr_core.train", *flags, "--name", "est-check", "--runs-dir", runs]
        began = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - began
        epochs = RunDir(Path(runs) / "est-check").metrics("epoch")
        trained = sum(m["epoch_time_s"] for m in epochs)
        steps = epochs[-1]["step"]
    print(f"load average after the run: {_load()}")
    print(
        f"real run: {wall:.0f} s wall ({wall / 60:.1f} min), of which {trained:.0f} s training steps "
        f"({trained / steps:.3f} s per step), {wall - trained:.0f} s the rest (start, monitor, checkpoints)"
    )
    print(f"estimate / real: {est.total_s / wall:.2f}")


if __name__ == "__main__":
    main()
