"""The code type-checks, lints and is formatted: mypy on simclr_core ([tool.mypy]), ruff's rules
([tool.ruff.lint]) and ruff's formatter on everything.

Run as part of the README's test command, so CI checks all three without a step of its own.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy is not installed (pip install -r requirements-dev.txt)"
)
def test_simclr_core_type_checks():
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "simclr_core"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"mypy simclr_core failed:\n{done.stdout}{done.stderr}"


@pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None, reason="ruff is not installed (pip install -r requirements-dev.txt)"
)
def test_the_code_lints():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"ruff check failed:\n{done.stdout}{done.stderr}"


@pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None, reason="ruff is not installed (pip install -r requirements-dev.txt)"
)
def test_the_code_is_formatted():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"ruff format --check failed (run: ruff format .):\n{done.stdout}{done.stderr}"
