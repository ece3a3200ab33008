"""Pre-train headless: ``python -m simclr_core.train --help``; the command line of :mod:`simclr_core.training`.

Many GPUs: ``torchrun --nproc_per_node N -m simclr_core.train ...`` runs the same code in N
processes (DDP). ``--batch-size`` stays the global batch; each rank takes its slice of every
batch, and only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import os
import sys

from simclr_core import distributed
from simclr_core.cli.common import Parser, add_config_args, config_from_args, run_cli
from simclr_core.config import TrainConfig, flag, options
from simclr_core.errors import UserError
from simclr_core.hardware import resolve_device
from simclr_core.runs.rundir import open_run
from simclr_core.training import train
from simclr_core.training.estimate import estimate

__all__ = ["RESUMABLE", "build_parser", "main", "train"]

# Flags that may change when resuming: they do not change what the run computes.
RESUMABLE = {
    "epochs",
    "device",
    "knn_every",
    "knn_k",
    "knn_max_bank",
    "log_every",
    "num_threads",
    "compile",
    "workers",
    "runs_dir",
    "probe",
    "tensorboard",
    "keep_best",  # which checkpoint is kept beside last.pt; a new signal starts best.pt afresh
    # the way out of a diverged run: the next steps differ, the run is still one
    # (config.json keeps the new value)
    "lr",
    "temperature",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``simclr_core.cli.train`` command line: one flag per config field."""
    p = Parser(
        prog="python -m simclr_core.train",
        description="Pre-train SimCLR on an image dataset. Writes checkpoints/<name>/ with config.json, "
        "metrics.jsonl, status.json, last.pt and backbone.pt (and best.pt with --keep-best). Ctrl-C, SIGTERM "
        "or a STOP file in the run folder stop cleanly after a checkpoint; --resume NAME continues exactly.",
    )
    p.add_argument(
        "--config", help="JSON or YAML file with sections data/views/model/optim/run; flags given here override it"
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run of this name from its last.pt; only these "
        "flags may change: " + ", ".join(sorted(map(flag, RESUMABLE))),
    )
    p.add_argument(
        "--estimate",
        action="store_true",
        help="measure how long this run would take on this machine (a few real training steps, one kNN "
        "monitor pass and a checkpoint, about 15 s), print it and exit; creates no run",
    )
    add_config_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; user errors print one line and return 2."""

    def go() -> int:
        args = build_parser().parse_args(argv)
        cfg, given = config_from_args(args)
        if args.estimate:
            return print_estimate(cfg, resume=args.resume)
        if args.resume:
            changed = sorted(given - RESUMABLE)
            if changed:
                raise UserError(
                    f"cannot change {', '.join(map(flag, changed))} when "
                    "resuming (the run would no longer be one run); start a new run instead"
                )
            run = open_run(cfg.run.runs_dir, args.resume)
            saved = run.config()
            where = options()
            for section, key in (where[o] for o in given):  # every one resumable (checked above)
                setattr(getattr(saved, section), key, getattr(getattr(cfg, section), key))
            saved.run.name = run.name
        # Under torchrun: join the group before any rank reads the run's status, and read it
        # before rank 0 writes to it (barrier), so no rank mistakes rank 0's run for another one.
        distributed.setup(resolve_device((saved if args.resume else cfg).run.device).type)
        try:
            if args.resume:
                st = run.status()
                # Its lock, not its status: a run whose writer on another machine died without a word still
                # reads "running" there for a while (RunDir.status), and must resume at once.
                if st.get("state") == "running" and run.writer_alive():
                    raise UserError(f"run '{run.name}' is running (pid {st.get('pid')}); stop it first")
                if st.get("state") == "finished" and st.get("epoch", 0) >= saved.optim.epochs:
                    raise UserError(
                        f"run '{run.name}' already finished {st.get('epoch')} epochs; pass --epochs N "
                        f"with N > {st.get('epoch')} to train it longer"
                    )
                cfg = saved
            distributed.barrier()
            run = train(cfg, resume=bool(args.resume))
            main = distributed.is_main()
        finally:
            distributed.cleanup()
        if main:
            print(f"run folder: {run.path}")
        return 0

    return run_cli(go)


def print_estimate(cfg: TrainConfig, resume: str | None) -> int:
    """``--estimate``: the measured run time of a new run of ``cfg``, printed; nothing written."""
    if resume:
        raise UserError("--estimate measures a new run; drop --resume (or --estimate)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: every rank would measure, all at once
        raise UserError("--estimate measures one process; run it without torchrun")
    est = estimate(cfg)
    print(est.describe())
    print(
        f"measured {est.measured_steps} step(s) of {est.measured_batch} images after a warm-up "
        f"({est.images_per_s:,.0f} images/s at batch {est.batch_size}) in {est.measure_s:.0f} s"
        + ("" if est.load is None else f"; load average {est.load:.1f} on {est.cpus} cores before measuring")
    )
    for note in est.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
