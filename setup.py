"""Packaging hook: the wheel carries the Streamlit app, so ``simclr-studio`` works from an installed package.

Everything else is in pyproject.toml. In the repository the app stays where a user expects it (app.py,
pages/, .streamlit/, configs/ at the top); building a wheel copies those into ``simclr_core/_app/``,
which :func:`simclr_core.resources.app_root` finds when there is no checkout around the package.
"""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from simclr_core.resources import copy_app  # noqa: E402 - the one list of the app's files (imports no torch)


class BuildPyWithApp(build_py):
    """build_py, then the app's files into the built package."""

    def run(self) -> None:
        super().run()
        copy_app(ROOT, Path(self.build_lib) / "simclr_core" / "_app")


setup(cmdclass={"build_py": BuildPyWithApp})
