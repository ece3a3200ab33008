"""Files that readers never see half-written, and the temp files of writers that died.

Every atomic write in the project writes ``.<name>.<pid>.tmp[.ext]`` beside its target and renames
it over the target. The pid in the name tells a later writer whether the temp file's owner still
lives, so :func:`remove_stale_temps` can delete what a kill -9 left behind (it may be hundreds of MB).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

TEMP_NAME = re.compile(r"^\..*\.(\d+)\.tmp(\.\w+)?$")  # .last.pt.<pid>.tmp, .epoch-0003.<pid>.tmp.npy, ...

# How libraries that write files themselves report a write that failed, without an OSError: torch.save's
# zip writer ("unexpected pos 2462464 vs 2462360", "file write failed"), NumPy ("92160 requested and 1984
# written") and safetensors ("I/O error: No space left on device (os error 28)").
_WRITE_FAILED = re.compile(
    r"unexpected pos|write failed|failed writing|requested and \d+ written|i/o error|os error \d+", re.I
)
_OS_ERROR = re.compile(r"os error (\d+)")
FULL_BELOW = 2**20  # a disk with less free space than this after a failed write was filled by it


def temp_path(path: Path, ext: str = "") -> Path:
    """The temp file beside ``path`` that this process writes before renaming it over ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{ext}")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so a reader never sees half a file (temp file + rename); no temp is left on failure."""
    tmp = temp_path(path)
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_error(e: BaseException, path: str | Path) -> OSError | None:
    """The OSError that a library's report of a failed write of ``path`` stands for; None if ``e`` is no such report.

    So a full disk reaches every caller as OSError(ENOSPC), whichever library was writing, and one handler
    gives one message. Call it before removing the half-written file: a short write is put down to a full
    disk when the disk has (almost) no room left beside it, else to an I/O error.
    """
    if isinstance(e, OSError) and e.errno is not None:
        return e
    text = str(e).strip()
    if not _WRITE_FAILED.search(text):
        return None
    m = _OS_ERROR.search(text)
    if m:
        code = int(m.group(1))
    else:
        try:
            full = shutil.disk_usage(Path(path).parent).free < FULL_BELOW
        except OSError:
            full = False
        code = errno.ENOSPC if full else errno.EIO
    why = os.strerror(code) + ("" if code == errno.ENOSPC else f" ({text.splitlines()[0][:160]})")
    return OSError(code, why, str(path))


def pid_alive(pid: Any) -> bool:
    """True if a process ``pid`` exists (any user's); False for anything that is not a positive int."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:  # kill(-1) would signal every process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: Path) -> int:
    """Delete the temp files (and temp folders) in ``folder`` whose writer is no longer alive; returns how many."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    removed = 0
    for e in entries:
        m = TEMP_NAME.match(e.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            try:
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path)
                else:
                    os.unlink(e.path)
                removed += 1
            except OSError:
                pass
    return removed


def tail(path: Path, lines: int = 20, max_bytes: int = 20_000) -> str:
    """The last ``lines`` non-empty lines of a log (read from its last ``max_bytes`` only), with
    progress bars' carriage-return redraws folded to their final state; "" if it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    out = [ln.split("\r")[-1] for ln in text.split("\n")]
    return "\n".join([ln for ln in out if ln.strip()][-lines:])
