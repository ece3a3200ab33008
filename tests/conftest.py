"""Shared fixtures: a tiny, fast SimCLR config on the bundled digits data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from simclr_core.cli.common import config_flags
from simclr_core.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def tiny_config(tmp_path: Path, name: str = "tiny", **optim) -> TrainConfig:
    """64 digits at 16 px, a narrow ResNet, 2 steps per epoch: a whole run takes about a second."""
    return TrainConfig(
        data=DataConfig(dataset="digits", data_dir=str(tmp_path / "data"), subset=64, image_size=16),
        model=ModelConfig(backbone="resnet_mini", cifar_stem=False, proj_hidden_dim=64, proj_out_dim=32),
        optim=OptimConfig(**{"epochs": 2, "batch_size": 32, **optim}),
        run=RunConfig(name=name, runs_dir=str(tmp_path / "runs"), knn_every=1, knn_max_bank=200, log_every=1),
    )


def tiny_args(tmp_path: Path, name: str = "tiny") -> list[str]:
    """The same tiny run as command-line flags."""
    return config_flags(tiny_config(tmp_path, name))


@pytest.fixture
def tiny(tmp_path: Path) -> TrainConfig:
    return tiny_config(tmp_path)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Same thread count in every test, so float reductions run in the same order."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tmpfs(tmp_path: Path):
    """``mount(size)`` mounts a tmpfs of ``size`` (e.g. "4m") on a fresh folder and returns it; a real full disk,
    which in-process fakes of a full disk missed (issue 16). Skipped where mounting is not allowed (not root,
    a container without CAP_SYS_ADMIN); unmounted after the test."""
    import subprocess

    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()[:200]}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
