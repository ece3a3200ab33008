"""Which folders the app may read images from: the roots that whoever starts the server allows.

A browser user types an image folder into the app; without a limit the server would read, show
and cache any folder it can read (``/``, ``/usr/share``, ``../../..``, ``/proc``). The app
confines those paths to the roots in ``$SIMCLR_STUDIO_ROOTS`` (folders separated by
``os.pathsep``, ``:`` on Linux and macOS), by default the user's home and the ``data/`` folder
of the folder the app runs in (where its datasets and decode cache live). The command-line
tools are not limited: whoever runs them has a shell already.
"""

from __future__ import annotations

import os
from pathlib import Path

from simclr_core.errors import UserError

ENV = "SIMCLR_STUDIO_ROOTS"


def _resolve(path: str | Path) -> Path:
    """``path`` absolute, with ``~`` expanded and every symlink and ``..`` resolved (it need not exist)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def allowed_roots() -> list[Path]:
    """The folders (resolved) under which the app may read images, from ``$SIMCLR_STUDIO_ROOTS``.

    Unset or blank: the user's home (``$HOME``) and ``./data``.
    """
    raw = os.environ.get(ENV, "")
    parts = [p.strip() for p in raw.split(os.pathsep) if p.strip()]
    if not parts:
        parts = [os.path.expanduser("~"), "data"]
    roots: list[Path] = []
    for p in parts:
        r = _resolve(p)
        if r not in roots:
            roots.append(r)
    return roots


def inside(path: Path, roots: list[Path]) -> bool:
    """True when the resolved ``path`` is one of ``roots`` or below one."""
    return any(path == r or path.is_relative_to(r) for r in roots)


def allowed_folder(path: str, label: str = "--data-path") -> Path:
    """``path`` resolved, if it lies under an allowed root; else a UserError naming the setting.

    Only where the path points is checked, not whether it exists: a caller says that next, so a
    browser user learns nothing about folders outside the roots. ``label`` names the field.
    """
    text = (path or "").strip()
    if not text:
        raise UserError(f"{label} is empty: enter the path of a folder of images")
    if "\x00" in text:
        raise UserError(f"{label} {text!r} is not a valid path")
    resolved = _resolve(text)
    roots = allowed_roots()
    if not inside(resolved, roots):
        shown = ", ".join(str(r) for r in roots)
        raise UserError(
            f"{label} {text} is outside the folders this app may read ({shown}); whoever starts "
            f"the server can allow more: {ENV}=/one/folder{os.pathsep}/another streamlit run app.py"
        )
    return resolved
