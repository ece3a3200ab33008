"""Helpers shared by the training tests: run the CLI, stop a run at an exact step, spawn a real one."""

import os
import subprocess
import sys
import time

from simclr_core.cli.train import main, train
from simclr_core.runs.rundir import RunDir
from simclr_core.training import loop

from tests.conftest import REPO, tiny_args, tiny_config


def run_main(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def train_until_stopped(cfg, monkeypatch, step: int):
    """Train ``cfg`` as if a stop were asked right after optimiser step ``step``."""
    real = loop.stop_requested

    def stop_once(s):
        if s.step == step and s.stop_reason is None:
            s.stop_reason = "test"
        return real(s)

    with monkeypatch.context() as m:
        m.setattr(loop, "stop_requested", stop_once)
        return train(cfg)


def method_config(tmp_path, name: str, method: str):
    cfg = tiny_config(tmp_path, name)
    cfg.method.name, cfg.method.queue_size = method, 48  # a queue that wraps within the run
    return cfg


def one_line_error(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def spawn_training(tmp_path, name, epochs="200"):
    args = tiny_args(tmp_path, name) + ["--epochs", epochs, "--knn-every", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "simclr_core.train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_training(run: RunDir, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(run.metrics()) >= 3:
            return
        time.sleep(0.2)
    raise AssertionError(f"training did not start: {proc.communicate()}")
