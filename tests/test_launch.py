"""simclr_core.launch: the command it starts and the checks before it (no process starts here).

Real launches are tested in tests/pages/test_train_page.py (slow tests).
"""

import json
import sys

import pytest

from simclr_core import launch
from simclr_core.errors import UserError

from tests.conftest import tiny_config

# ---------------------------------------------------------------- launch: one process or torchrun


def test_launch_command_uses_torchrun_for_several_gpus_and_checks_the_count(tmp_path, monkeypatch):
    assert launch.command(["--resume", "x"]) == [sys.executable, "-m", "simclr_core.train", "--resume", "x"]
    cmd = launch.command(["--resume", "x"], nproc=4)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[5:] == ["-m", "simclr_core.train", "--resume", "x"]

    spawned = []
    monkeypatch.setattr(launch, "_spawn", lambda run, args, nproc=1: spawned.append((run.name, nproc)))
    cfg = tiny_config(tmp_path, "a")  # batch 32
    with pytest.raises(UserError, match="2 GPUs asked for but 0 visible"):
        launch.launch(cfg, nproc=2)
    monkeypatch.setattr(launch, "gpu_count", lambda: 4)
    with pytest.raises(UserError, match="batch size 32 must split evenly over 3 GPUs"):
        launch.launch(cfg, nproc=3)
    assert not (tmp_path / "runs" / "a").exists()  # nothing created for a refused launch
    run = launch.launch(cfg, nproc=2)
    assert spawned == [("a", 2)]
    (run.path / "launch.json").write_text(json.dumps({"pid": -1, "nproc": 2}))
    assert launch.launched_nproc(run) == 2
    launch.resume(run)  # the same number of GPUs as its last launch
    launch.resume(run, nproc=1)
    assert spawned[1:] == [("a", 2), ("a", 1)]
