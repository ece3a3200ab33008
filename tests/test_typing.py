"""The code type-checks and lints: mypy on simclr_core ([tool.mypy]) and ruff on everything ([tool.ruff.lint]).

Run as part of the README's test command, so CI checks both without a step of its own.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (pip install -r requirements-dev.txt)")
def test_simclr_core_type_checks():
    done = subprocess.run([sys.executable, "-m", "mypy", "simclr_core"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"mypy simclr_core failed:\n{done.stdout}{done.stderr}"


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                    reason="ruff is not installed (pip install -r requirements-dev.txt)")
def test_the_code_lints():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"ruff check failed:\n{done.stdout}{done.stderr}"
