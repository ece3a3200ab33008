"""Where the app's files are: the repository checkout, or the copy inside an installed wheel.

The repository keeps the layout a user reads (app.py, pages/, .streamlit/, configs/ at the top). A
wheel carries the same files in ``simclr_core/_app/`` (setup.py copies them), so an installed
package can start the app (``simclr-studio``) and read the recipes (``configs/``) too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# What the app needs beside the library: copied into the wheel (setup.py) and, for a read-only install,
# into the user's cache (simclr_core.cli.studio).
APP_FILES = ("app.py", "pages", "ui", ".streamlit/config.toml", "configs", "static/.gitkeep")


def app_root() -> Path:
    """The folder holding app.py, pages/, ui/, .streamlit/config.toml and configs/."""
    checkout = PACKAGE_DIR.parent
    if (checkout / "app.py").is_file() and (checkout / "pages").is_dir():
        return checkout
    return PACKAGE_DIR / "_app"


def configs_dir() -> Path:
    """The recipe zoo: one YAML file per recipe."""
    return app_root() / "configs"


def copy_app(src: Path, dst: Path) -> None:
    """Copy :data:`APP_FILES` from the app folder ``src`` into ``dst`` (without caches)."""
    for name in APP_FILES:
        source, target = src / name, dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)
