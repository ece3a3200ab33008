"""Shared fixtures: a tiny, fast SimCLR config on the bundled digits data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
    return [
        "--dataset",
        "digits",
        "--data-dir",
        str(tmp_path / "data"),
        "--subset",
        "64",
        "--image-size",
        "16",
        "--backbone",
        "resnet_mini",
        "--no-cifar-stem",
        "--proj-hidden-dim",
        "64",
        "--proj-out-dim",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--name",
        name,
        "--runs-dir",
        str(tmp_path / "runs"),
        "--knn-max-bank",
        "200",
        "--log-every",
        "1",
    ]


@pytest.fixture
def tiny(tmp_path: Path) -> TrainConfig:
    return tiny_config(tmp_path)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Same thread count in every test, so float reductions run in the same order."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
