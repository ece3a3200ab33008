"""Start, stop and resume training in a process of its own (for the app).

The process is started in a new session, so it outlives page reloads, closed browsers and even
the app; it talks back only through files in its run folder (status.json, metrics.jsonl,
train.log, and console.log for anything it prints).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.files import tail
from simclr_core.hardware import gpu_count
from simclr_core.runs.rundir import STATES, RunDir, new_run

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding simclr_core/


def launch(cfg: TrainConfig, nproc: int = 1) -> RunDir:
    """Start a new run described by ``cfg`` (``cfg.run.name`` required); returns at once.

    ``nproc`` > 1 starts it under torchrun, one process per GPU (``--batch-size`` is the global batch).
    """
    if not cfg.run.name:
        raise UserError("give the run a name")
    cfg.validate()
    check_nproc(nproc, cfg.optim.batch_size)
    run = new_run(cfg.run.runs_dir, cfg.run.name)
    # config.json at once, so the run is listed (and its name taken) while the process starts;
    # "resuming" a run with no checkpoint yet starts it from scratch.
    cfg.save(run.config_path)
    _spawn(run, ["--resume", run.name, "--runs-dir", str(run.path.parent)], nproc)
    return run


def resume(run: RunDir, epochs: int | None = None, nproc: int | None = None) -> None:
    """Continue a stopped, failed or finished run, optionally to a new total of ``epochs``.

    ``nproc`` None uses as many processes as the run's last launch (any number works: the
    batch is global, and the data order continues exactly).
    """
    if is_active(run):
        raise UserError(f"run '{run.name}' is still running; stop it first")
    if nproc is None:
        nproc = min(launched_nproc(run), max(1, gpu_count()))
    check_nproc(nproc, run.config().optim.batch_size)
    args = ["--resume", run.name, "--runs-dir", str(run.path.parent)]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    # "starting" at once, as a new run reads before its first status: every watcher then follows the
    # resumed run from this moment, not only once its process has loaded Python, the data and the model
    old = run.status()
    run.write_status("starting", "resuming: the training process is loading Python and the data")
    try:
        _spawn(run, args, nproc)
    except OSError:
        state = old.get("state")
        run.write_status(state if isinstance(state, str) and state in STATES else "stopped", old.get("message", ""))
        raise


def check_nproc(nproc: int, batch_size: int | None) -> None:
    """A UserError unless ``nproc`` processes (one per GPU) can run a batch of ``batch_size`` (None: "auto",
    which the run makes a multiple of ``nproc``)."""
    if nproc < 1:
        raise UserError(f"the number of GPUs must be at least 1, got {nproc}")
    if nproc > 1 and nproc > gpu_count():
        raise UserError(f"{nproc} GPUs asked for but {gpu_count()} visible; pick at most {max(1, gpu_count())}")
    if batch_size is not None and batch_size % nproc:
        raise UserError(f"batch size {batch_size} must split evenly over {nproc} GPUs; use a multiple of {nproc}")


def launched_nproc(run: RunDir) -> int:
    """Processes of the run's last launch (1 if unknown)."""
    nproc = run.launch_info().get("nproc", 1)
    return nproc if isinstance(nproc, int) and nproc >= 1 else 1


def stop(run: RunDir) -> None:
    """Ask the run to checkpoint and stop (it sees the STOP file within one step)."""
    run.request_stop()


def command(args: list[str], nproc: int = 1) -> list[str]:
    """The training command: ``python -m simclr_core.train ARGS``, under torchrun for several GPUs."""
    if nproc > 1:
        # --standalone: a rendezvous on this machine at a free port (several runs may share it).
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "simclr_core.train",
            *args,
        ]
    return [sys.executable, "-m", "simclr_core.train", *args]


def _spawn(run: RunDir, args: list[str], nproc: int = 1) -> int:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])),
    }
    with open(run.console_path, "ab") as console:
        proc = subprocess.Popen(
            command(args, nproc),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    run.record_launch(proc.pid, args, nproc)
    return proc.pid


def is_active(run: RunDir) -> bool:
    """True while the run's training process is alive (also before it wrote its first status)."""
    if run.status().get("state") == "running":
        return True
    pid = run.launcher_pid()
    if pid is None or not run.launcher_alive():
        return False
    try:  # reap it if it is our own finished child, so it does not linger as a zombie
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def console_tail(run: RunDir, lines: int = 20) -> str:
    """The last lines the training process printed (errors included), tqdm's carriage returns folded."""
    return tail(run.console_path, lines)
