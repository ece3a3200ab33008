"""simclr_core.runs.launch: the command it starts and the checks before it (no process starts here).

Real launches are tested in tests/pages/test_train_page.py (slow tests).
"""

import json
import sys

import pytest

from simclr_core.errors import UserError
from simclr_core.runs import launch

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


# ---------------------------------------------------------------- resume: followed from the first moment


def test_resume_says_starting_at_once_and_a_process_that_dies_at_start_reads_as_died(tmp_path, monkeypatch):
    """The app must follow a resumed run from the click on (issue 16): a stopped run said "stopped" until its
    process had loaded Python, the data and the model, so nothing polled it."""
    import subprocess

    from simclr_core.runs.rundir import RunDir

    cfg = tiny_config(tmp_path, "r")
    run = RunDir(tmp_path / "runs" / "r")
    run.path.mkdir(parents=True)
    cfg.save(run.config_path)
    run.write_status("stopped", epoch=7, step=70, total_steps=500)
    sleeper = subprocess.Popen(["sleep", "30"])  # stands in for the training process while it starts
    monkeypatch.setattr(
        launch, "_spawn", lambda r, args, nproc=1: r.record_launch(sleeper.pid, args, nproc) or sleeper.pid
    )
    launch.resume(run, 50)
    status = run.status()
    assert status["state"] == "starting" and status["epoch"] == 7 and "resuming" in status["message"]
    assert launch.is_active(run)
    sleeper.kill()
    sleeper.wait()
    status = run.status()  # it ended without writing a status: it died, and says where to look
    assert status["state"] == "died" and "console.log" in status["message"]
    assert not launch.is_active(run)


def test_a_resume_that_cannot_start_its_process_keeps_the_old_status(tmp_path, monkeypatch):
    from simclr_core.runs.rundir import RunDir

    cfg = tiny_config(tmp_path, "r")
    run = RunDir(tmp_path / "runs" / "r")
    run.path.mkdir(parents=True)
    cfg.save(run.config_path)
    run.write_status("stopped", "stopped by the user", epoch=3)

    def fail(r, args, nproc=1):
        raise OSError("no such interpreter")

    monkeypatch.setattr(launch, "_spawn", fail)
    with pytest.raises(OSError):
        launch.resume(run, 10)
    assert run.status()["state"] == "stopped" and run.status()["epoch"] == 3
