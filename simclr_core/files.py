"""Files that readers never see half-written, and the temp files of writers that died.

Every atomic write in the project writes ``.<name>.<pid>.tmp[.ext]`` beside its target and renames
it over the target. The pid in the name tells a later writer whether the temp file's owner still
lives, so :func:`remove_stale_temps` can delete what a kill -9 left behind (it may be hundreds of MB).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

TEMP_NAME = re.compile(r"^\..*\.(\d+)\.tmp(\.\w+)?$")  # .last.pt.<pid>.tmp, .epoch-0003.<pid>.tmp.npy, ...


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
    """Delete the temp files in ``folder`` whose writer is no longer alive; returns how many."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    removed = 0
    for e in entries:
        m = TEMP_NAME.match(e.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            try:
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
