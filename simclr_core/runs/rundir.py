"""The run folder: the files through which a training process and its watchers (the app) talk.

``checkpoints/<run>/`` holds ``config.json``, ``metrics.jsonl`` (appended line by line),
``status.json`` (running / finished / stopped / failed + message), ``last.pt``, ``backbone.pt``
with ``backbone.json``, ``train.log``, with ``--keep-best`` ``best.pt`` and ``best.json`` (which epoch it
holds, and its signal's value) and, while a stop is asked for, ``STOP``.

A little over our 450-line guide on purpose: :class:`RunDir` is the one owner of these files, their
atomic writes and the writer lock, and who is alive (a local process, or a run on another machine seen
through a shared folder); split, the rules on liveness would be read in pieces. What the app shows of a
run's progress lives beside it, in :mod:`simclr_core.runs.progress`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simclr_core.config import TrainConfig, check_run_name
from simclr_core.errors import UserError
from simclr_core.files import pid_alive, remove_stale_temps, temp_path, write_json_atomic
from simclr_core.heads import LEGACY_HEAD

__all__ = [
    "KINDS",
    "STATES",
    "CHECKPOINT_CHOICES",
    "CheckpointInfo",
    "RunDir",
    "best_record",
    "default_runs_dir",
    "is_epoch_line",
    "line_kind",
    "list_runs",
    "new_run",
    "open_run",
    "pid_alive",
    "process_start",
    "resolve_run",
    "write_json_atomic",
]

STATES = ("starting", "running", "finished", "stopped", "failed")  # "starting": written by the app on resume
STATUS_RESERVE = 64 * 1024  # bytes set aside while a run trains, for its last status on a full disk


TEXT_METRICS = {"collapse", "kind"}  # metric fields that hold text; all others are numbers
# A metrics line's "kind": "step", every --log-every steps (loss, lr, speed), or "epoch", at an epoch's
# end (its mean loss, the kNN monitor, the probe's health). Lines of 0.2 and earlier have no kind.
KINDS = ("step", "epoch")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


CHECKPOINT_CHOICES = ("last", "best")  # what --checkpoint names besides a path (RunDir.checkpoint_file)


def best_record(obj: Any) -> dict[str, Any] | None:
    """``obj`` as the record of a best.pt ({"signal", "value", "epoch", "step"}), or None when it is not one
    (a damaged best.json, a checkpoint saved before --keep-best)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("signal"), str) or not _number(obj.get("value")):
        return None
    counts = [obj.get("epoch"), obj.get("step")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
        return None
    return {"signal": obj["signal"], "value": float(obj["value"]), "epoch": obj["epoch"], "step": obj["step"]}


LOCK_NAME = ".writer.lock"
# A run trained on another machine (a cluster, seen over a shared folder) whose lock this machine cannot
# see counts as running while its status is this fresh (seconds): rank 0 rewrites it every --log-every steps.
REMOTE_STALE_S = 1800.0


def process_start(pid: int) -> int | None:
    """When the process ``pid`` started, in clock ticks since boot (Linux /proc), or None where unknown.

    With the pid it names one process: a pid reused by a later process has another start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name before ")" may hold spaces
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class CheckpointInfo:
    """Where a training checkpoint stands: ``epoch`` epochs done and ``step`` steps in all."""

    epoch: int
    step: int
    steps_per_epoch: int

    @property
    def mid_epoch(self) -> bool:
        """Saved by a stop inside an epoch (not at its end)."""
        return self.steps_per_epoch > 0 and self.step > self.epoch * self.steps_per_epoch

    def label(self) -> str:
        """ "epoch 5", or "epoch 3, step 12 of 50" for a checkpoint a stop saved inside epoch 3."""
        if not self.mid_epoch:
            return f"epoch {self.epoch}"
        inside = self.step - self.epoch * self.steps_per_epoch
        return f"epoch {self.epoch + 1}, step {inside} of {self.steps_per_epoch}"

    @classmethod
    def of(cls, ckpt: dict[str, Any]) -> CheckpointInfo | None:
        """The info of a loaded training checkpoint or of ``last.json``; None when its numbers are not numbers."""
        numbers = [ckpt.get("epoch"), ckpt.get("step"), ckpt.get("steps_per_epoch", 0)]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in numbers):
            return None
        epoch, step, spe = (int(v) for v in numbers)  # checked just above
        return cls(epoch, step, spe)


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
    checkpoint_info_path = property(lambda self: self.path / "last.json")  # last.pt's epoch and step
    best_ckpt = property(lambda self: self.path / "best.pt")  # --keep-best: the best monitor epoch's weights
    best_info_path = property(lambda self: self.path / "best.json")  # best.pt's epoch, signal and value
    embeddings_dir = property(lambda self: self.path / "embeddings")
    export_dir = property(lambda self: self.path / "export")  # simclr-export's files

    def config(self) -> TrainConfig:
        """The run's saved configuration."""
        cfg = TrainConfig.load(self.config_path)
        try:  # runs saved before the option pre-trained on their held-out fifth too: keep them one run
            saved = json.loads(self.config_path.read_bytes())
            data, model = saved.get("data") or {}, saved.get("model") or {}
        except (OSError, ValueError, AttributeError):
            data, model = {}, {}
        if "transductive" not in data:
            cfg.data.transductive = True
        if "head" not in model:  # saved before per-method heads: MoCo v2 and BYOL runs had SimCLR's head too
            cfg.model.head = LEGACY_HEAD
        return cfg

    @contextlib.contextmanager
    def writer(self, what: str) -> Iterator[None]:
        """Hold the run folder's writer lock (an OS lock on ``.writer.lock``) while the block runs.

        The kernel releases the lock when the process ends, however it ends, so a dead writer never
        blocks the run and a reused pid never looks like one. A second writer gets a UserError
        naming the first. Taking the lock also removes temp files that dead writers left behind.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(
                    f"run '{self.name}' is being written by another process "
                    f"({self._holder(fd)}); wait for it to end, or stop it first"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}).encode())
            self.remove_stale_temps()
            yield
        finally:
            os.close(fd)  # releases the lock

    def _holder(self, fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            since = time.strftime("%H:%M:%S", time.localtime(info["since"]))
            return f"pid {int(info['pid'])}, {info.get('what', 'a writer')} since {since}"
        except (OSError, ValueError, KeyError, TypeError):
            return "a writer that is starting"

    def writer_alive(self) -> bool:
        """True while some process that this machine can see holds :meth:`writer` (probing the lock takes
        and drops it at once)."""
        fd = -1
        for mode in (os.O_RDWR, os.O_RDONLY):  # NFS takes an exclusive lock only on a file open for writing
            with contextlib.suppress(OSError):
                fd = os.open(self.path / LOCK_NAME, mode)
                break
        if fd < 0:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # a mount without locks (or a read-only one over NFS): the status's host and age decide
            return False
        finally:
            os.close(fd)
        return False

    def remove_stale_temps(self) -> int:
        """Delete temp files (``.<name>.<pid>.tmp*``) of writers that are no longer alive; returns how many."""
        return sum(remove_stale_temps(folder) for folder in (self.path, self.path / "probe"))

    def write_status(self, state: str, message: str = "", **extra: Any) -> None:
        """Record the run's state for watchers; ``extra`` adds fields such as epoch."""
        assert state in STATES, state
        old = self.status()
        status = {
            **old,
            "state": state,
            "message": message,
            "pid": os.getpid(),
            "host": socket.gethostname(),  # where the pid lives; a watcher on another machine cannot probe it
            "updated": time.time(),
            **extra,
        }
        try:
            write_json_atomic(self.status_path, status)
        except OSError:
            if not self._write_status_on_full_disk(status):
                raise

    status_reserve_path = property(lambda self: self.path / ".status.reserve")

    def reserve_status_space(self) -> None:
        """Set aside a little disk space (``.status.reserve``) for a last status: a run that fills its disk
        can then still say how it ended, instead of being left "running" (shown as died)."""
        # no room even for this: the status is written if it can be
        with contextlib.suppress(OSError), open(self.status_reserve_path, "wb") as f:
            f.write(bytes(STATUS_RESERVE))
            f.flush()
            os.fsync(f.fileno())  # blocks allocated now, not at a later flush that may find the disk full

    def release_status_space(self) -> None:
        """Give back what :meth:`reserve_status_space` set aside (the run is over, or needs it for its status)."""
        with contextlib.suppress(OSError):
            self.status_reserve_path.unlink(missing_ok=True)

    def _write_status_on_full_disk(self, status: dict[str, Any]) -> bool:
        """Write ``status`` where a full disk still has room; True when it was written.

        First into the space of ``.status.reserve``, given up for it, as usual (temp file and rename);
        else over the old status.json in place, whose blocks are already the file's (not atomic: a reader
        may see half of it for an instant, and calls it damaged).
        """
        if self.status_reserve_path.exists():
            self.release_status_space()
            try:
                write_json_atomic(self.status_path, status)
                return True
            except OSError:
                pass
        data = json.dumps(status).encode()
        try:
            fd = os.open(self.status_path, os.O_WRONLY)
        except OSError:
            return False
        try:
            view = memoryview(data)
            while view:
                view = view[os.pwrite(fd, view, len(data) - len(view)) :]
            os.ftruncate(fd, len(data))
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    launch_path = property(lambda self: self.path / "launch.json")  # the process the app started, written by launch
    console_path = property(lambda self: self.path / "console.log")  # what that process printed

    def launch_info(self) -> dict[str, Any]:
        """``launch.json``: pid, start_ticks, started, args, nproc of the app's last launch ({} if none or damaged)."""
        try:
            info = json.loads(self.launch_path.read_bytes())
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def record_launch(self, pid: int, args: list[str], nproc: int) -> None:
        """Write ``launch.json`` for a process the app just started (with its start time: pid reuse)."""
        write_json_atomic(
            self.launch_path,
            {"pid": pid, "start_ticks": process_start(pid), "started": time.time(), "args": args, "nproc": nproc},
        )

    def launcher_pid(self) -> int | None:
        """The pid of the last training process the app started for this run (``launch.json``), if any."""
        pid = self.launch_info().get("pid")
        return pid if isinstance(pid, int) and not isinstance(pid, bool) else None

    def launcher_alive(self) -> bool:
        """True while the process the app last started for this run lives: its pid *and* its start time
        match, so a pid the system has since given to another process does not count."""
        pid, start = self.launcher_pid(), self.launch_info().get("start_ticks")
        if pid is None or not pid_alive(pid):
            return False
        return start is None or process_start(pid) in (None, start)

    def status(self) -> dict[str, Any]:
        """The last status written, with ``state`` "died" if it says running but its process is gone.

        Before the first status, a run the app launched is "starting" while its process lives.
        """
        try:
            st = json.loads(self.status_path.read_bytes())
        except FileNotFoundError:
            if self.launcher_alive():
                return {"state": "starting", "message": "the training process is loading Python and the data"}
            return {}
        except (OSError, ValueError):  # unreadable, not JSON, not UTF-8
            st = None
        if not isinstance(st, dict) or not isinstance(st.get("state", ""), str):
            return {
                "state": "damaged",
                "message": f"{self.status_path.name} is damaged (not a JSON object with a "
                "state); resume the run to write it afresh, or delete it",
            }
        for key in ("epoch", "step", "total_steps", "updated", "images_per_s"):  # numbers the pages compute with
            if key in st and not _number(st[key]):
                st.pop(key)
        if not isinstance(st.get("message", ""), str):
            st["message"] = str(st["message"])
        if st.get("state") == "running" and not self.writer_alive():
            host, age = st.get("host"), time.time() - st.get("updated", 0.0)
            if isinstance(host, str) and host != socket.gethostname():  # its lock may be invisible from here
                if age > REMOTE_STALE_S:
                    st["state"] = "died"
                    st["message"] = (
                        f"no word from {host} for {age / 60:.0f} min: its training process has likely ended; resume it"
                    )
            else:
                st["state"] = "died"
                st["message"] = st.get("message") or "the training process ended without a word; resume it"
        elif st.get("state") == "starting" and not self.launcher_alive() and not self.writer_alive():
            st["state"] = "died"
            st["message"] = "the training process ended before it started; what it printed is in console.log"
        return st

    def write_checkpoint_info(self, info: CheckpointInfo, key: str) -> None:
        """Record where the ``last.pt`` just written stands (``key``: its size and mtime), so that a page can
        say "epoch 5" without loading the checkpoint."""
        write_json_atomic(self.checkpoint_info_path, {**asdict(info), "key": key})

    def checkpoint_file(self, which: str | Path = "last") -> Path:
        """The file a ``--checkpoint`` choice names: "last" (``last.pt``), "best" (``best.pt``, kept by
        ``--keep-best``) or a path; a UserError when the run has no such checkpoint yet."""
        if str(which) == "best":
            if not self.best_ckpt.is_file():
                raise UserError(
                    f"run '{self.name}' has no best.pt: it is kept by runs trained with --keep-best SIGNAL, from "
                    f"their first monitor epoch on; resume it with --keep-best, or use --checkpoint last"
                )
            return self.best_ckpt
        path = self.last_ckpt if str(which) == "last" else Path(which)
        if not path.is_file():
            raise UserError(f"run '{self.name}' has no checkpoint {path.name} yet: train it for an epoch first")
        return path

    def write_best_info(self, record: dict[str, Any], key: str) -> None:
        """Record which epoch the ``best.pt`` just written holds, by which signal and value (``key``: its size
        and mtime), so that a page or a resume can tell without loading it."""
        write_json_atomic(self.best_info_path, {**record, "key": key})

    def best_info(self, key: str) -> dict[str, Any] | None:
        """The :func:`best_record` of the best.pt named ``key``, if ``best.json`` describes it (None: unknown)."""
        try:
            info = json.loads(self.best_info_path.read_bytes())
        except (OSError, ValueError):
            return None
        return best_record(info) if isinstance(info, dict) and info.get("key") == key else None

    def checkpoint_info(self, key: str) -> CheckpointInfo | None:
        """Where the checkpoint named ``key`` stands, if ``last.json`` describes it (None: unknown, or another one)."""
        try:
            info = json.loads(self.checkpoint_info_path.read_bytes())
        except (OSError, ValueError):
            return None
        return CheckpointInfo.of(info) if isinstance(info, dict) and info.get("key") == key else None

    eval_path = property(lambda self: self.path / "eval.json")  # evaluation results, oldest first
    tags_path = property(
        lambda self: self.path / "tags.json"
    )  # the explorer's named selections (simclr_core.explorer.tags)

    def read_json_list(self, path: Path) -> list[Any]:
        """A JSON list file of this folder ([] when missing, unreadable or not a list)."""
        try:
            items = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return []
        return items if isinstance(items, list) else []

    def update_json_list(self, path: Path, update: Callable[[list[Any]], list[Any]]) -> None:
        """Rewrite a JSON list file of this folder as ``update`` returns it, atomically. A lock spans the
        read-modify-write, so two writers at once (the app and a CLI, two browser tabs) both keep their
        change (one waits for the other, which takes milliseconds)."""
        fd = os.open(path.with_name(f".{path.stem}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            write_json_atomic(path, update(self.read_json_list(path)))
        finally:
            os.close(fd)

    def eval_results(self) -> list[dict[str, Any]]:
        """The evaluation results in ``eval.json``, oldest first ([] when none, unreadable or damaged)."""
        return [r for r in self.read_json_list(self.eval_path) if isinstance(r, dict)]

    def add_eval_result(self, result: dict[str, Any]) -> None:
        """Append one result to ``eval.json`` (:meth:`update_json_list`)."""
        self.update_json_list(self.eval_path, lambda results: [*results, result])

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line; flushed at once so another process can follow the file."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def metrics(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All complete metric lines, or those of one ``kind`` (a half-written last line is skipped).

        Every line has its ``kind``; a line written before lines had one gets it from its keys.
        """
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        try:
            lines = self.metrics_path.read_bytes().decode("utf-8", errors="replace").splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                m = json.loads(line)
            except ValueError:
                continue
            # a line is an object with an integer step; anything else (42, null, {"epoch": 1}) is skipped,
            # and so is a value that should be a number and is not ({"loss": "abc"})
            if isinstance(m, dict) and isinstance(m.get("step"), int) and not isinstance(m["step"], bool):
                m = {k: v for k, v in m.items() if _number(v) or v is None or k in TEXT_METRICS}
                m["kind"] = line_kind(m)
                if kind is None or m["kind"] == kind:
                    out.append(m)
        return out

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines past ``step``: after a resume they would be logged again."""
        kept = [m for m in self.metrics() if m.get("step", 0) <= step]
        tmp = temp_path(self.metrics_path)
        tmp.write_text("".join(json.dumps(m) + "\n" for m in kept))
        os.replace(tmp, self.metrics_path)

    def request_stop(self) -> None:
        """Ask the training process to checkpoint and stop (it polls for this file every step)."""
        self.stop_path.touch()

    def stop_requested(self) -> bool:
        return self.stop_path.exists()

    def clear_stop(self) -> None:
        """Remove ``STOP``; a folder of that name (not ours to delete) is a UserError naming the fix."""
        if self.stop_path.is_dir():
            raise UserError(
                f"{self.stop_path} is a folder, where a STOP file asks the run to stop; move it out of the "
                "run folder, then resume"
            )
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
            raise UserError(
                f"run '{name}' already exists in {runs_dir}: resume it (--resume {name}) or choose another name"
            )
        for stale in (run.metrics_path, run.status_path, run.config_path, run.best_ckpt, run.best_info_path):
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


def line_kind(m: dict[str, Any]) -> str:
    """A metrics line's kind, "step" or "epoch" (see :data:`KINDS`); read from its keys on lines without one."""
    kind = m.get("kind")
    if kind in KINDS:
        return str(kind)
    return "epoch" if "epoch_loss" in m else "step"


def is_epoch_line(m: dict[str, Any]) -> bool:
    """True for the metrics line written at the end of an epoch, False for a per-step line."""
    return line_kind(m) == "epoch"


def list_runs(runs_dir: str | Path) -> list[RunDir]:
    """Every run folder (one holding ``config.json``), newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if (p / "config.json").is_file()]
    return sorted(runs, key=lambda r: r.config_path.stat().st_mtime, reverse=True)
