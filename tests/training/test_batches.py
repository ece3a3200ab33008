"""Batches (training/batches.py): DataLoader workers feed exactly the batches of the on-device path."""

import pytest
import torch

from simclr_core.cli.train import main, train
from simclr_core.runs import checkpoints
from simclr_core.runs.rundir import RunDir

from tests.conftest import tiny_config
from tests.training.common import train_until_stopped


@pytest.mark.parametrize("stop_after_step", [None, 3], ids=["straight", "resumed-mid-epoch"])
def test_dataloader_workers_feed_the_same_batches(tmp_path, monkeypatch, capsys, stop_after_step):
    """Batches gathered by DataLoader workers (images too big for the GPU) equal those indexed inline."""
    inline = train(tiny_config(tmp_path, "inline"))
    cfg = tiny_config(tmp_path, "workers")
    cfg.run.workers = 1
    if stop_after_step:
        train_until_stopped(cfg, monkeypatch, stop_after_step)
        assert main(["--resume", "workers", "--runs-dir", str(tmp_path / "runs")]) == 0, capsys.readouterr().err
    else:
        train(cfg)
    a = checkpoints.load(inline.last_ckpt)["model"]
    b = checkpoints.load(RunDir(tmp_path / "runs" / "workers").last_ckpt)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
