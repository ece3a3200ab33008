"""The wheel: built from the tree, installed into a fresh venv, used from a folder outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # builds a wheel and a venv, and runs the commands in processes

COMMANDS = ("simclr-train", "simclr-evaluate", "simclr-embed", "simclr-export", "simclr-studio")
IGNORED = shutil.ignore_patterns(
    ".venv",
    ".git",
    "checkpoints",
    ".bench",
    "test-output",
    "__pycache__",
    "thumbs",
    "build",
    "*.egg-info",
    ".pytest_cache",
)


def SKIP(folder: str, names: list[str]) -> set[str]:
    """What the copy leaves out: caches and run output, and the datasets' download folder at the top (not
    the packages named data, simclr_core/data and tests/data)."""
    return set(IGNORED(folder, names)) | ({"data"} & set(names) if Path(folder) == REPO else set())


def run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv holding only the wheel (--no-deps); the current environment's packages are visible through a .pth,
    so nothing is downloaded."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=SKIP)  # building writes build/ and egg-info: not into the checkout
    study = src / "simclr_core" / "evaluation" / "label_free_study.json"
    if not study.exists():  # until bench/label_free.py has written it: the wheel must carry it all the same
        study.write_text('{"best": {"runs": "lidar_h"}}')
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(src),
        ]
    )
    [wheel] = (tmp / "dist").glob("simclr_studio-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    purelib = Path(
        run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    )
    (purelib / "current-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ]
    )
    outside = tmp / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SIMCLR_RUNS_DIR")}
    return wheel, venv, outside, env


def test_the_wheel_holds_every_subpackage_and_the_app(installed):
    wheel, *_ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "simclr_core").rglob("__init__.py")}
    assert {"simclr_core", "simclr_core/losses", "simclr_core/methods"} <= packages
    assert all(f"{p}/__init__.py" in names for p in packages)
    for f in (
        "app.py",
        "pages/embeddings.py",
        "ui/shell.py",
        ".streamlit/config.toml",
        "configs/cpu-demo.yaml",
        "static/.gitkeep",
    ):
        assert f"simclr_core/_app/{f}" in names, f
    assert "simclr_core/evaluation/label_free_study.json" in names  # package data: the app reads it
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: torch>=2.4" in meta and "Requires-Dist: faiss-cpu>=1.8" in meta
    assert 'Requires-Dist: timm>=1.0; extra == "export"' in meta


def test_every_command_from_outside_the_checkout(installed):
    _, venv, outside, env = installed
    where = run(
        [str(venv / "bin" / "python"), "-c", "import simclr_core.methods, simclr_core; print(simclr_core.__file__)"],
        cwd=outside,
        env=env,
    )
    assert str(venv) in where  # the installed copy, not the checkout
    for cmd in COMMANDS:
        assert "usage:" in run([str(venv / "bin" / cmd), "--help"], cwd=outside, env=env)
    run(
        [
            str(venv / "bin" / "simclr-train"),
            "--dataset",
            "digits",
            "--backbone",
            "resnet_mini",
            "--no-cifar-stem",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--subset",
            "64",
            "--image-size",
            "16",
            "--knn-every",
            "0",
            "--no-probe",
            "--name",
            "from-wheel",
        ],
        cwd=outside,
        env=env,
    )
    assert (outside / "checkpoints" / "from-wheel" / "backbone.pt").is_file()
    out = run(
        [str(venv / "bin" / "simclr-export"), "--run", "from-wheel", "--format", "safetensors"], cwd=outside, env=env
    )
    assert "from-wheel.safetensors" in out
    # the installed app renders (its pages import from the wheel) and its presets are the wheel's recipes
    check = (
        "from streamlit.testing.v1 import AppTest; from simclr_core.resources import app_root; "
        "at = AppTest.from_file(str(app_root() / 'app.py'), default_timeout=120); at.run(); "
        "assert not at.exception, at.exception; print(str(app_root()), at.selectbox(key='tf_preset').value)"
    )
    out = run([str(venv / "bin" / "python"), "-c", check], cwd=outside, env=env)
    assert "_app" in out and str(venv) in out and "Quick CPU demo" in out
