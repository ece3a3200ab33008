"""Background jobs: the app's minutes of embedding, k-NN graphs and UMAP run in a worker process.

A page calls :func:`submit` and then polls :func:`status` (a file read), so a reload, a widget
touch or a closed tab never kills the work, and a second session asking for the same thing shares
it. One worker per runs folder takes jobs in order from ``<runs>/.jobs/``:

- ``<id>.json``: a job's kind, spec and state (queued / running / done / failed / cancelled),
  its progress and, when done, its result (paths of the files it wrote, or e.g. an evaluation's
  figures); written atomically. A page finds its jobs again after a reload with :func:`find`;
- ``worker.json`` and ``worker.log``: the worker's pid and what it printed.

The worker compiles UMAP's numba code in a background thread as it starts (~70 s on a 2-core CPU),
so the user's first UMAP takes about as long as a warm one (``SIMCLR_UMAP_WARM_UP=0`` skips that).
``SIMCLR_JOBS=inline`` runs each job inside :func:`submit` instead (tests, notebooks).

``python -m simclr_core.explorer.jobs --dir DIR`` is the worker; the app starts it with ``--parent`` (its own pid),
and the worker ends within a second of the app's death, even in the middle of a job, which the next
worker runs again. SIGTERM ends it at once.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from simclr_core.errors import UserError
from simclr_core.runs.rundir import pid_alive, process_start, write_json_atomic

__all__ = ["ACTIVE", "ahead", "busy_with", "ensure_worker", "find", "job_id", "jobs_dir", "status", "submit", "worker"]

ACTIVE = ("queued", "running")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
IDLE_EXIT_S = 120  # a worker whose app has gone exits after this long without work
PARENT_POLL_S = 0.2  # a worker with --parent ends within about this long of its app's death


def jobs_dir(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / ".jobs"


def job_id(kind: str, spec: dict[str, Any]) -> str:
    """The same (kind, spec) always names the same job, so identical requests share one."""
    return hashlib.sha1(json.dumps([kind, spec], sort_keys=True).encode()).hexdigest()[:20]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        job = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return job if isinstance(job, dict) and isinstance(job.get("state"), str) else None


def _jobs(directory: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(file, record) of every readable job in ``directory``, in no particular order."""
    for path in directory.glob("*.json"):
        if path.name != "worker.json" and (job := _read(path)) is not None:
            yield path, job


def _files_exist(result: dict[str, Any]) -> bool:
    return all(
        Path(v).exists()
        for k, v in result.items()
        if k in ("embeddings", "graph", "coords", "trajectory", "file", "thumbs_dir")
    )


def status(directory: str | Path, jid: str) -> dict[str, Any]:
    """The job's record: ``state``, ``stage``, ``done``/``total``, ``message`` (failed), ``result`` (done).

    A job marked running whose worker has died reads as failed, with a message saying so.
    """
    job = _read(Path(directory) / f"{jid}.json")
    return {"state": "missing"} if job is None else _as_seen(job)


def _as_seen(job: dict[str, Any]) -> dict[str, Any]:
    """A job record as pages see it: marked running by a worker that has died, it failed."""
    if job["state"] == "running" and not _is_worker(job.get("pid")):
        job.update(state="failed", message="the background worker stopped while computing this; try again")
    return job


def find(directory: str | Path, kind: str) -> list[dict[str, Any]]:
    """Every job of ``kind`` in ``directory``, newest first, each as :func:`status` reads it.

    A page that submitted a job keeps no id across a reload; it finds its jobs here again.
    """
    found = [_as_seen(job) for _, job in _jobs(Path(directory)) if job.get("kind") == kind]
    return sorted(found, key=lambda j: j.get("submitted", 0.0), reverse=True)


def busy_with(directory: str | Path, run: str | Path) -> bool:
    """True while a queued or running job reads or writes the run folder ``run`` (its spec names it)."""
    target = str(Path(run))
    for _, job in _jobs(Path(directory)):
        spec = job.get("spec")
        if not isinstance(spec, dict):
            continue
        named = [spec.get("run")] + [r.get("run") for r in spec.get("runs", []) if isinstance(r, dict)]
        if target in named and _as_seen(job)["state"] in ACTIVE:
            return True
    return False


def ahead(directory: str | Path, jid: str) -> list[dict[str, Any]]:
    """The jobs the worker does before ``jid`` (it takes the oldest first): the running one, then those queued
    earlier, each as :func:`status` reads it; [] when ``jid`` is not waiting."""
    directory = Path(directory)
    mine = _read(directory / f"{jid}.json")
    if mine is None or mine["state"] != "queued":
        return []
    before = [
        _as_seen(job)
        for _, job in _jobs(directory)
        if job.get("id") != jid
        and (job["state"] == "running" or job["state"] == "queued" and job.get("submitted", 0) < mine["submitted"])
    ]
    before = [j for j in before if j["state"] in ACTIVE]
    return sorted(before, key=lambda j: (j["state"] != "running", j.get("submitted", 0.0)))


def submit(
    directory: str | Path,
    kind: str,
    spec: dict[str, Any],
    slot: str | None = None,
    retry: bool = False,
    title: str | None = None,
) -> str:
    """Queue (kind, spec) unless it is queued, running or done already; returns the job's id.

    Args:
        title: what the job makes, in words ("Embedding the train split of run a"), for the pages
            that wait behind it (:func:`ahead`).
        slot: a name for "what this view shows now", e.g. one session's map: submitting a new job
            in the same slot cancels the slot's jobs still waiting, so a user turning a slider
            does not queue ten projections.
        retry: queue it again if it failed before, or finished with some parts failed (a non-empty
            ``result["errors"]``, e.g. an evaluation where one run had no checkpoint yet).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    jid = job_id(kind, spec)
    path = directory / f"{jid}.json"
    old = status(directory, jid)
    partly_failed = old["state"] == "done" and bool((old.get("result") or {}).get("errors"))
    if old["state"] in ACTIVE or (
        old["state"] == "done" and _files_exist(old.get("result", {})) and not (retry and partly_failed)
    ):
        return jid
    if old["state"] == "failed" and not retry:
        return jid
    job = {
        "id": jid,
        "kind": kind,
        "spec": spec,
        "title": title or kind,
        "slot": slot,
        "state": "queued",
        "submitted": time.time(),
        "stage": "waiting for the worker",
        "done": 0,
        "total": 0,
    }
    write_json_atomic(path, job)
    if slot is not None:
        for other, o in _jobs(directory):
            if other != path and o.get("slot") == slot and o["state"] == "queued":
                write_json_atomic(other, {**o, "state": "cancelled"})
    if os.environ.get("SIMCLR_JOBS") == "inline":
        _execute(directory, path)
    else:
        ensure_worker(directory)
    return jid


def _execute(directory: Path, path: Path) -> None:
    """Run one queued job, recording progress, result or error in its file."""
    from simclr_core.explorer.compute import run_job  # imports torch; the app's pages need not

    job = _read(path)
    if job is None or job["state"] != "queued":
        return
    job.update(state="running", pid=os.getpid(), started=time.time())
    write_json_atomic(path, job)
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        # a file write at most twice a second per stage; a new stage is written at once, or a quick
        # stage followed by a long one would show the quick one for minutes
        if now - last[0] > 0.5 or done >= total or stage != job.get("stage"):
            last[0] = now
            job.update(stage=stage, done=done, total=total)
            write_json_atomic(path, job)

    try:
        result = run_job(job["kind"], job["spec"], progress)
        job.update(state="done", result=result, finished=time.time())
    except UserError as e:
        job.update(state="failed", message=str(e))
    except Exception as e:  # noqa: BLE001 - a bug must not kill the worker; the page shows one line
        job.update(state="failed", message=f"{type(e).__name__}: {e}".splitlines()[0], traceback=traceback.format_exc())
    write_json_atomic(path, job)


def _is_worker(pid: Any) -> bool:
    """True if ``pid`` is a live worker process (not a reused pid of something else, where /proc tells)."""
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    try:
        return b"simclr_core.explorer.jobs" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the pid


def ensure_worker(directory: str | Path) -> int:
    """The pid of this folder's worker, started now if none is alive."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    info = _read_worker(directory)
    if info and _is_worker(info.get("pid")):
        return int(info["pid"])
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "simclr_core.explorer.jobs", "--dir", str(directory), "--parent", str(os.getpid())]
    if os.environ.get("SIMCLR_UMAP_WARM_UP") == "0":
        cmd.append("--no-warm-up")
    with open(directory / "worker.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    write_json_atomic(directory / "worker.json", {"pid": proc.pid, "started": time.time(), "state": "starting"})
    return proc.pid


def _read_worker(directory: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((directory / "worker.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def warm_up_umap() -> None:
    """Compile UMAP's numba functions with a small fit that takes the same code path as a real one
    (4,200 points: above UMAP's 4,096-point switch to approximate neighbours)."""
    import numpy as np

    from simclr_core.explorer.projection import project

    project(np.random.default_rng(0).standard_normal((4200, 16)).astype(np.float32), "umap", 2)


def _app_gone(parent: int, started: int | None, child: bool) -> bool:
    """True once the process ``parent`` has ended. ``started``: its start time when the worker began (a
    reused pid has another); ``child``: it was the worker's own parent, so a new parent pid means it exited
    (even before anyone reaped it, when a pid check would still find its zombie)."""
    if child and os.getppid() != parent:
        return True
    return not pid_alive(parent) or (started is not None and process_start(parent) != started)


def _watch_parent(parent: int, poll_s: float = PARENT_POLL_S) -> None:
    """End this process within ``poll_s`` of the app ``parent``'s death, from a daemon thread.

    The main thread may be inside a long job (a UMAP, a linear probe) for minutes, where no flag or
    exception reaches it; os._exit from another thread ends the process at once (the compiled code of
    torch, numba and sklearn lets other threads run: at most 0.25 s late during a 50k-point UMAP). A job
    it was running stays "running" in its file, with this pid: pages read it as failed ("try again"),
    and the next worker queues it again (:func:`_requeue_orphans`).
    """
    started, child = process_start(parent), os.getppid() == parent

    def watch() -> None:
        while not _app_gone(parent, started, child):
            time.sleep(poll_s)
        # os.write to the log (fd 2), not print: another thread may hold sys.stderr's lock; nothing may delay the exit
        with contextlib.suppress(OSError):
            os.write(2, f"worker {os.getpid()}: the app (pid {parent}) is gone; stopping\n".encode())
        os._exit(0)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _default_sigterm() -> None:
    """Let SIGTERM end the worker at once: its default action, unblocked.

    torch, numba, umap, faiss and sklearn install no SIGTERM handler (checked after importing and
    using each); this undoes one that a job's code left behind. A Python handler would run only when
    the main thread next runs Python code, minutes later inside a long C call. (While a dataset is
    decoded into its cache, :mod:`simclr_core.data.cache` turns SIGTERM into KeyboardInterrupt for a moment,
    to delete its temp file; the worker then ends as well.)
    """
    if threading.current_thread() is not threading.main_thread():  # signal.signal works in the main thread only
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):  # not on Windows
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _requeue_orphans(directory: Path) -> int:
    """Queue again the jobs left "running" by a worker that died (killed, or its app gone); returns how many."""
    n = 0
    for path, job in _jobs(directory):
        if job["state"] == "running" and not _is_worker(job.get("pid")):
            write_json_atomic(path, {**job, "state": "queued"})
            n += 1
    return n


def worker(
    directory: str | Path, parent: int | None = None, warm_up: bool = True, idle_exit_s: float = IDLE_EXIT_S
) -> None:
    """Run queued jobs of ``directory`` one by one, oldest first.

    With ``parent`` (the app's pid), the worker ends within a second of the app's death, even inside a
    job; without, it exits after ``idle_exit_s`` seconds with nothing to do. SIGTERM ends it at once.
    """
    directory = Path(directory)
    if parent is not None:
        _watch_parent(parent)
    _default_sigterm()
    write_json_atomic(directory / "worker.json", {"pid": os.getpid(), "started": time.time(), "state": "ready"})
    _requeue_orphans(directory)
    if warm_up:
        threading.Thread(target=warm_up_umap, name="umap-warm-up", daemon=True).start()
    idle_since = time.monotonic()
    while True:
        queued = sorted((j["submitted"], p) for p, j in _jobs(directory) if j["state"] == "queued")
        if queued:
            _execute(directory, queued[0][1])
            _default_sigterm()  # a job's code may have installed a handler and left it
            idle_since = time.monotonic()
            continue
        if (parent is None or not pid_alive(parent)) and time.monotonic() - idle_since > idle_exit_s:
            return
        time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simclr_core.explorer.jobs", description="The app's background worker.")
    p.add_argument("--dir", required=True, help="the jobs folder (<runs>/.jobs)")
    p.add_argument(
        "--parent", type=int, default=None, help="the app's pid: exit within a second of its death, even mid-job"
    )
    p.add_argument("--no-warm-up", action="store_true", help="do not compile UMAP at start")
    p.add_argument(
        "--idle-exit",
        type=float,
        default=IDLE_EXIT_S,
        metavar="S",
        help=f"seconds without work after which a worker whose app has gone exits [default: {IDLE_EXIT_S}]",
    )
    args = p.parse_args(argv)
    worker(args.dir, args.parent, warm_up=not args.no_warm_up, idle_exit_s=args.idle_exit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
