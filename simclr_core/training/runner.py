"""A run's lifecycle: take the run folder (rank 0 alone writes it), train, and record how it ended.

Status and log around :func:`~simclr_core.training.loop.fit`; SIGINT/SIGTERM become a clean stop
after a checkpoint; every failure a user can cause ends as ``failed`` with a message naming the fix.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from simclr_core import distributed
from simclr_core.config import TrainConfig, check_run_name
from simclr_core.embeddings import checkpoint_key
from simclr_core.errors import UserError
from simclr_core.explorer import probe
from simclr_core.hardware import describe, resolve_device
from simclr_core.runs import tboard
from simclr_core.runs.rundir import RunDir, new_run, open_run
from simclr_core.training.loop import fit
from simclr_core.training.memory import OOM_ERRORS, oom_message
from simclr_core.training.session import Session, prepare


def train(cfg: TrainConfig, resume: bool = False) -> RunDir:
    """Create (or reopen) the run folder and train to ``cfg.optim.epochs``; the programmatic entry point.

    Under torchrun every rank calls this; rank 0 creates the folder and writes every file.
    """
    cfg.validate()
    distributed.setup(resolve_device(cfg.run.device).type)
    main = distributed.is_main()
    if cfg.run.name is None and not resume:
        cfg.run.name = distributed.broadcast(f"{cfg.data.dataset}-{cfg.model.backbone}-{datetime.now():%Y%m%d-%H%M%S}")
    with contextlib.ExitStack() as held:
        error = None
        if main:  # rank 0 writes every file: it alone takes the folder's writer lock, before anything else
            name = cfg.run.name
            try:
                name = check_run_name(name)
                run = open_run(cfg.run.runs_dir, name) if resume else RunDir(Path(cfg.run.runs_dir) / name)
                held.enter_context(run.writer("training"))
                if not resume:
                    run = new_run(cfg.run.runs_dir, name)
                    # at once, so a run that fails while loading data is listed with its error
                    cfg.save(run.config_path)
                run.reserve_status_space()  # so a run that fills its disk can still record how it ended
                held.callback(run.release_status_space)
            except UserError as e:
                error = str(e)
            except OSError as e:  # a read-only folder, or --runs-dir naming a file
                error = f"cannot write the run folder {Path(cfg.run.runs_dir) / str(name)} ({e.strerror or e}); " + (
                    "make it writable, then resume" if resume else "choose another --runs-dir"
                )
        error = distributed.broadcast(error)  # every rank fails alike, none waits forever
        if error:
            raise UserError(error)
        if not main:  # on another machine, the folder rank 0 made is there only on a filesystem they share
            try:
                run = open_run(cfg.run.runs_dir, check_run_name(cfg.run.name))
            except UserError as e:
                error = (
                    f"rank {distributed.rank()} on {socket.gethostname()} does not see the run folder that rank 0 "
                    f"made: {e}; put --runs-dir on a filesystem that every machine shares"
                )
        error = next(filter(None, distributed.all_objects(error)), None)
        if error:
            if main:
                with contextlib.suppress(OSError):
                    run.write_status("failed", error)
            raise UserError(error)
        return _train_in(run, cfg, resume)


def _train_in(run: RunDir, cfg: TrainConfig, resume: bool) -> RunDir:
    """The run's lifecycle once its folder is ours: status, log, the loop, and how it ended."""
    main = distributed.is_main()

    def status(state: str, *args, **kw) -> None:
        if main:
            try:
                run.write_status(state, *args, **kw)
            except OSError as e:  # the disk is full: the run goes on, or ends with its own message
                print(f"note: could not write {run.status_path} ({e.strerror or e})", file=sys.stderr)

    try:
        if main:
            run.clear_stop()
        log_file = _open_log(run.log_path if main else os.devnull)
    except UserError as e:
        status("failed", str(e))
        raise
    with _closing_quietly(log_file):
        s: Session | None = None  # the out-of-memory message tries smaller steps with it, once built
        try:
            s = prepare(cfg, run, resume)
            cfg = s.cfg  # resolved: every "auto" value decided, as config.json records it
            s.log_file = log_file
            if main:
                cfg.save(run.config_path)
                run.truncate_metrics(s.step)
                probe.drop_frames_after(run.path, s.epoch)
                s.scalars = tboard.Scalars(run.path, s.step, enabled=cfg.run.tensorboard)
            world = distributed.world_size()
            s.log(
                f"{'resuming' if s.step else 'starting'} {cfg.method.name} run {run.name} at epoch {s.epoch}, "
                f"step {s.step} of {s.total_steps} on {describe(s.device)}"
                + (f" x {world} processes" if world > 1 else "")
                + f"; {len(s.images)} images, {s.steps_per_epoch} steps per epoch"
                + (f"; skipped {s.skipped} file(s)" if s.skipped else "")
            )
            for note in s.notes:
                s.log(note)
            status(
                "running",
                epoch=s.epoch,
                step=s.step,
                total_steps=s.total_steps,
                device=describe(s.device) + (f" x {world}" if world > 1 else ""),
            )
            with stop_on_signals(s):
                try:
                    outcome = fit(s)
                finally:
                    if s.scalars is not None:
                        s.scalars.close()
        except UserError as e:
            status("failed", str(e))
            raise
        except OSError as e:  # the run folder filled its disk, or became read-only, between checkpoints
            msg = (
                f"cannot write {e.filename or 'to the run folder'} ({e.strerror or e}); free space there (or "
                f"make it writable), then resume with --resume {run.name}"
            )
            status("failed", msg)
            raise UserError(msg) from None
        except OOM_ERRORS as e:
            msg = oom_message(e, s, cfg.optim.batch_size)  # names a batch that fits, found by halving
            status("failed", msg)
            raise UserError(msg) from None
        except BaseException as e:
            if distributed.peer_lost(e):  # one line naming the lost rank, not a gloo/NCCL traceback
                msg = _lost_rank_message(run, s)
                status("failed", msg)
                if distributed.lost_rank() == 0:
                    _record_for_lost_main(run, msg)
                raise UserError(msg) from None
            status("failed", f"{type(e).__name__}: {e}".splitlines()[0])
            raise
        if outcome == "stopped":
            msg = f"stopped by {s.stop_reason} at epoch {s.epoch + 1}, step {s.step}; resume with --resume {run.name}"
        else:
            msg = f"finished {s.epoch} epochs"
        s.log(msg)
        status(outcome, msg, epoch=s.epoch, step=s.step, total_steps=s.total_steps)
        if main:
            run.clear_stop()
    return run


def _lost_rank_message(run: RunDir, s: Session | None) -> str:
    """The one line of a run whose collective failed because another rank went away: which rank, where,
    what was kept, and how to go on."""
    lost = distributed.lost_rank()
    who = "another rank" if lost is None else f"rank {lost}"
    wait = distributed.collective_timeout().total_seconds()
    at = f" at epoch {s.epoch + 1}, step {s.step}" if s is not None else " while starting"
    # From the disk, not the session: rank 0 writes last.pt after the others move on, and may be the one lost.
    info = run.checkpoint_info(checkpoint_key(run.last_ckpt))
    if info is not None:
        kept = f"kept the last checkpoint ({info.label()}, step {info.step})"
    else:
        kept = "kept the last checkpoint" if run.last_ckpt.is_file() else "no checkpoint yet"
    return (
        f"{who} was lost{at} (its process ended, or its machine or network went silent for {wait:g} s; its own "
        f"output says why); {kept}; resume with --resume {run.name}"
    )


def _record_for_lost_main(run: RunDir, msg: str) -> None:
    """Rank 0, the one that writes the run's files, is gone: record how the run ended in its place, unless
    rank 0 ended the run in its own words before it went (a status other than "running")."""
    # Its writer lock is free once its process has ended; a lock still held (its machine went silent, not
    # its process) leaves the status to read "died" when the lock goes.
    with contextlib.suppress(UserError, OSError), run.writer("recording that rank 0 was lost"):
        if run.status().get("state") == "running":
            run.write_status("failed", msg)


def _open_log(path: str | Path) -> IO[str]:
    """``train.log``, opened for appending, or a UserError saying what is in its way."""
    try:
        return open(path, "a")
    except OSError as e:
        if os.path.isdir(path):
            raise UserError(
                f"{path} is a folder, where the run keeps its log; move it out of the run folder, then resume"
            ) from None
        raise UserError(
            f"cannot open {path} ({e.strerror or e}); make the run folder writable (or free space there), then resume"
        ) from None


@contextlib.contextmanager
def _closing_quietly(f: IO[str]) -> Iterator[IO[str]]:
    """Yield ``f`` and close it however the block ends: on a full disk the flush at close fails too, and
    that must not replace the run's own message (already on its way) with a traceback."""
    try:
        yield f
    finally:
        with contextlib.suppress(OSError):
            f.close()


class stop_on_signals:
    """While active, SIGINT/SIGTERM ask the loop to checkpoint and stop instead of killing it."""

    def __init__(self, s: Session):
        self.s = s
        self.old: dict[signal.Signals, Any] = {}

    def __enter__(self):
        def handler(signum, frame):
            if self.s.stop_reason is not None:  # a second Ctrl-C stops at once
                raise KeyboardInterrupt
            self.s.stop_reason = signal.Signals(signum).name

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread (e.g. inside a test runner thread)
                self.old[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self.old.items():
            signal.signal(sig, old)
        return False
