"""The run folder: the files through which a training process and its watchers (the app) talk.

``checkpoints/<run>/`` holds ``config.json``, ``metrics.jsonl`` (appended line by line),
``status.json`` (running / finished / stopped / failed + message), ``last.pt``, ``backbone.pt``
with ``backbone.json``, ``train.log`` and, while a stop is asked for, ``STOP``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simclr_core.config import TrainConfig, check_run_name
from simclr_core.errors import UserError

STATES = ("running", "finished", "stopped", "failed")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so a reader never sees half a file (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def pid_alive(pid: int | None) -> bool:
    if not pid or pid < 0:  # kill(-1) would signal every process we may signal
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDir:
    """One run's folder and the files in it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = self.path.name

    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    status_path = property(lambda self: self.path / "status.json")
    last_ckpt = property(lambda self: self.path / "last.pt")
    backbone_path = property(lambda self: self.path / "backbone.pt")
    log_path = property(lambda self: self.path / "train.log")
    stop_path = property(lambda self: self.path / "STOP")
    embeddings_dir = property(lambda self: self.path / "embeddings")
    export_dir = property(lambda self: self.path / "export")  # simclr-export's files

    def config(self) -> TrainConfig:
        """The run's saved configuration."""
        return TrainConfig.load(self.config_path)

    def write_status(self, state: str, message: str = "", **extra: Any) -> None:
        """Record the run's state for watchers; ``extra`` adds fields such as epoch."""
        assert state in STATES, state
        old = self.status()
        status = {**old, "state": state, "message": message, "pid": os.getpid(),
                  "updated": time.time(), **extra}
        write_json_atomic(self.status_path, status)

    def launcher_pid(self) -> int | None:
        """The pid of the last training process the app started for this run (``launch.json``), if any."""
        try:
            return int(json.loads((self.path / "launch.json").read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def status(self) -> dict[str, Any]:
        """The last status written, with ``state`` "died" if it says running but its process is gone.

        Before the first status, a run the app launched is "starting" while its process lives.
        """
        try:
            st = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            if pid_alive(self.launcher_pid()):
                return {"state": "starting", "message": "the training process is loading Python and the data"}
            return {}
        if st.get("state") == "running" and not pid_alive(st.get("pid")):
            st["state"] = "died"
            st["message"] = st.get("message") or "the training process ended without a word; resume it"
        return st

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line; flushed at once so another process can follow the file."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def metrics(self) -> list[dict[str, Any]]:
        """All complete metric lines (a half-written last line is skipped)."""
        try:
            lines = self.metrics_path.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines past ``step``: after a resume they would be logged again."""
        kept = [m for m in self.metrics() if m.get("step", 0) <= step]
        tmp = self.metrics_path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(json.dumps(m) + "\n" for m in kept))
        os.replace(tmp, self.metrics_path)

    def request_stop(self) -> None:
        """Ask the training process to checkpoint and stop (it polls for this file every step)."""
        self.stop_path.touch()

    def stop_requested(self) -> bool:
        return self.stop_path.exists()

    def clear_stop(self) -> None:
        self.stop_path.unlink(missing_ok=True)


def new_run(runs_dir: str | Path, name: str) -> RunDir:
    """Create ``runs_dir/name`` for a new run; an existing run is an error (it would be overwritten).

    A folder without ``config.json`` is taken as it is, and so is a run that failed before its
    first checkpoint: it holds no work to lose, and the user can fix the flag and start again
    under the same name.
    """
    check_run_name(name)
    run = RunDir(Path(runs_dir) / name)
    if run.config_path.exists():
        if run.last_ckpt.exists() or run.status().get("state") != "failed":
            raise UserError(f"run '{name}' already exists in {runs_dir}: resume it (--resume {name}) "
                            "or choose another name")
        for stale in (run.metrics_path, run.status_path, run.config_path):
            stale.unlink(missing_ok=True)
    run.path.mkdir(parents=True, exist_ok=True)
    return run


def open_run(runs_dir: str | Path, name: str) -> RunDir:
    """An existing run folder, or a UserError listing the runs there are."""
    check_run_name(name)
    path = Path(runs_dir) / name
    if not (path / "config.json").is_file():
        known = [r.name for r in list_runs(runs_dir)]
        hint = f"runs in {runs_dir}: {', '.join(known)}" if known else f"{runs_dir} holds no runs yet"
        raise UserError(f"no run named '{name}' ({hint})")
    return RunDir(path)


def default_runs_dir() -> Path:
    """The folder of run folders when none is named: ``$SIMCLR_RUNS_DIR``, else ``./checkpoints``."""
    return Path(os.environ.get("SIMCLR_RUNS_DIR", "checkpoints"))


def resolve_run(source: str | Path | RunDir) -> RunDir:
    """A run from a :class:`RunDir`, its folder, or its name under :func:`default_runs_dir`."""
    if isinstance(source, RunDir):
        return source
    path = Path(source)
    if path.is_dir():
        return RunDir(path)
    return open_run(default_runs_dir(), str(source))


@dataclass
class RunSummary:
    """One row of the run list."""

    name: str
    state: str
    message: str
    epoch: int
    epochs: int
    method: str
    last_loss: float | None
    best_knn: float | None
    updated: float


def summarize(run: RunDir) -> RunSummary:
    """Status, progress and best numbers of a run, read from its files."""
    st = run.status()
    metrics = run.metrics()
    losses = [m["loss"] for m in metrics if isinstance(m.get("loss"), (int, float))]
    knns = [m["knn_top1"] for m in metrics if isinstance(m.get("knn_top1"), (int, float))]
    try:
        cfg = run.config()
        epochs, method = cfg.optim.epochs, cfg.model.method
    except UserError:
        epochs, method = 0, ""
    return RunSummary(
        name=run.name, state=st.get("state", "unknown"), message=st.get("message", ""),
        epoch=int(st.get("epoch", 0)), epochs=epochs, method=method,
        last_loss=losses[-1] if losses and math.isfinite(losses[-1]) else None,
        best_knn=max(knns) if knns else None, updated=float(st.get("updated", 0.0)),
    )


def list_runs(runs_dir: str | Path) -> list[RunDir]:
    """Every run folder (one holding ``config.json``), newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if (p / "config.json").is_file()]
    return sorted(runs, key=lambda r: r.config_path.stat().st_mtime, reverse=True)
