"""Tidy the runs folder: archive (a recoverable delete), restore, rename, notes, and telling junk runs apart.

Archiving moves a run folder into ``<runs>/.archive/``, whole and unchanged, so nothing is lost:
:func:`restore` moves it back (or ``mv`` does, by hand). A run that a process is writing (training,
evaluating, embedding) is never moved: its writer would go on writing into a folder that is gone.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from simclr_core.config import check_run_name
from simclr_core.errors import UserError
from simclr_core.explorer import jobs
from simclr_core.runs import launch
from simclr_core.runs.rundir import RunDir, open_run

ARCHIVE = ".archive"  # under the runs folder; a name no run can have (check_run_name: no leading '.')
ARCHIVED_JSON = "archived.json"  # in an archived run: its name and when it was archived
NOTES = "notes.md"
MAX_NOTES = 20_000  # characters
# States of runs that hold nothing to continue: they failed, died, or never started.
FAILED_STATES = frozenset({"failed", "died", "damaged", "unknown"})


def is_failed(state: str) -> bool:
    """True for the state of a run that failed, died, is damaged, or never started (no status at all)."""
    return state in FAILED_STATES


def _busy(run: RunDir) -> bool:
    """True while a process trains the run (here, or on another machine that writes the shared folder), holds
    its folder's writer lock, or a background job (an evaluation, embeddings for a map) works on it."""
    return (
        launch.is_active(run)
        or run.writer_alive()
        or run.status().get("state") == "running"
        or jobs.busy_with(jobs.jobs_dir(run.path.parent), run.path)
    )


def _check_idle(run: RunDir, what: str) -> None:
    if _busy(run):
        raise UserError(
            f"run '{run.name}' is running (or being evaluated); stop it or wait for it to end, then {what} it"
        )


def archive_dir(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / ARCHIVE


def archive(runs_dir: str | Path, name: str) -> Path:
    """Move the run ``name`` into ``<runs>/.archive/`` (a UserError while it runs); returns its new folder.

    The archived folder is named after the run, with the time appended when that name is taken.
    """
    run = open_run(runs_dir, name)
    _check_idle(run, "archive")
    dest_dir = archive_dir(runs_dir)
    dest_dir.mkdir(exist_ok=True)
    dest = dest_dir / name
    if dest.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = dest_dir / f"{name}-{stamp}"
        n = 1
        while dest.exists():
            n += 1
            dest = dest_dir / f"{name}-{stamp}-{n}"
    (run.path / ARCHIVED_JSON).write_text(json.dumps({"name": name, "archived": time.time()}) + "\n")
    try:
        os.rename(run.path, dest)
    except OSError as e:
        (run.path / ARCHIVED_JSON).unlink(missing_ok=True)
        raise UserError(
            f"run '{name}' could not be archived ({e.strerror or e}); check the runs folder's permissions"
        ) from None
    return dest


@dataclass
class ArchivedRun:
    """One run in the archive."""

    folder: str  # its folder name under .archive/
    name: str  # the name it had
    archived: float  # when, seconds since the epoch (0 if unknown)


def list_archived(runs_dir: str | Path) -> list[ArchivedRun]:
    """The archived runs, most recently archived first."""
    root = archive_dir(runs_dir)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if not (p / "config.json").is_file():
            continue
        try:
            meta = json.loads((p / ARCHIVED_JSON).read_text())
            name, when = str(meta["name"]), float(meta["archived"])
        except (OSError, ValueError, KeyError, TypeError):
            name, when = p.name, 0.0
        out.append(ArchivedRun(p.name, name, when))
    return sorted(out, key=lambda a: a.archived, reverse=True)


def restore(runs_dir: str | Path, folder: str, name: str | None = None) -> RunDir:
    """Move an archived run back into the runs folder, under ``name`` (default: the name it had)."""
    src = archive_dir(runs_dir) / folder
    if folder in ("", ".", "..") or "/" in folder or not (src / "config.json").is_file():
        raise UserError(f"no archived run {folder!r} in {archive_dir(runs_dir)}")
    if name is None:
        try:
            name = str(json.loads((src / ARCHIVED_JSON).read_text())["name"])
        except (OSError, ValueError, KeyError, TypeError):
            name = folder
    check_run_name(name)
    dest = Path(runs_dir) / name
    if dest.exists():
        raise UserError(f"a run named '{name}' exists already: rename it, or restore this one under another name")
    os.rename(src, dest)
    (dest / ARCHIVED_JSON).unlink(missing_ok=True)
    _set_config_name(RunDir(dest))
    return RunDir(dest)


def _set_config_name(run: RunDir) -> None:
    """Write the folder's name into config.json's run.name, keeping the file's time (the run list's order)."""
    try:
        stat = run.config_path.stat()
        cfg = json.loads(run.config_path.read_text())
        if not isinstance(cfg, dict) or not isinstance(cfg.get("run"), dict) or cfg["run"].get("name") == run.name:
            return
        cfg["run"]["name"] = run.name
        tmp = run.config_path.with_name(f".config.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")
        os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        os.replace(tmp, run.config_path)
    except (OSError, ValueError):
        pass  # the name in config.json is informative only: a resume takes the folder's name


def rename(runs_dir: str | Path, old: str, new: str) -> RunDir:
    """Rename the run ``old`` to ``new`` (a checked name, not taken); refused while the run is running."""
    check_run_name(new)
    run = open_run(runs_dir, old)
    if new == old:
        return run
    _check_idle(run, "rename")
    dest = Path(runs_dir) / new
    if dest.exists():
        raise UserError(f"a run named '{new}' exists already: choose another name")
    try:
        os.rename(run.path, dest)
    except OSError as e:
        raise UserError(
            f"run '{old}' could not be renamed ({e.strerror or e}); check the runs folder's permissions"
        ) from None
    _set_config_name(RunDir(dest))
    return RunDir(dest)


def read_notes(run: RunDir) -> str:
    """The run's notes (``notes.md``), "" when it has none or they cannot be read."""
    try:
        return (run.path / NOTES).read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ""


def write_notes(run: RunDir, text: str) -> None:
    """Replace the run's notes (allowed while it trains: training never touches notes.md); "" removes them."""
    if len(text) > MAX_NOTES:
        raise UserError(f"notes are limited to {MAX_NOTES:,} characters, got {len(text):,}; shorten them")
    path = run.path / NOTES
    try:
        if not text.strip():
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(f".{NOTES}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"the notes of run '{run.name}' could not be saved ({e.strerror or e})") from None
