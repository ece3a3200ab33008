"""last.pt (training/state.py): exact resume, never a non-finite weight, a checkpoint that does not fit."""

import json

import pytest
import torch

from simclr_core import checkpoints
from simclr_core.runs import RunDir
from simclr_core.training import train

from tests.conftest import tiny_args, tiny_config
from tests.training.common import (
    method_config,
    one_line_error,
    run_main,
    train_until_stopped,
)


@pytest.mark.parametrize("method", ["simclr", "moco_v2", "byol"])
@pytest.mark.parametrize("stop_after_step", [2, 3], ids=["epoch-boundary", "mid-epoch"])
def test_resume_is_exact(tmp_path, monkeypatch, capsys, stop_after_step, method):
    straight = train(method_config(tmp_path, "straight", method))
    stopped = train_until_stopped(method_config(tmp_path, "stopped", method), monkeypatch, stop_after_step)
    assert stopped.status()["state"] == "stopped" and "--resume stopped" in stopped.status()["message"]
    assert checkpoints.load(stopped.last_ckpt)["step"] == stop_after_step

    code, err = run_main(["--resume", "stopped", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    a, b = checkpoints.load(straight.last_ckpt), checkpoints.load(stopped.last_ckpt)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 4)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    ea = [(m["epoch"], m["epoch_loss"], m["knn_top1"]) for m in straight.metrics("epoch")]
    eb = [(m["epoch"], m["epoch_loss"], m["knn_top1"]) for m in stopped.metrics("epoch")]
    assert ea == eb


def test_non_finite_weights_are_never_checkpointed(tmp_path, monkeypatch, capsys):
    """The loss stays finite (training uses batch statistics), but a running variance went inf."""
    from simclr_core.methods.simclr import SimCLR

    def poison_at_step_3(self, step, total_steps):
        if step == 3:
            self.encoder.backbone.bn1.running_var.fill_(float("inf"))

    monkeypatch.setattr(SimCLR, "after_step", poison_at_step_3)
    code, err = run_main(tiny_args(tmp_path), capsys)
    line = one_line_error(code, err)
    assert "the weights became non-finite (encoder.backbone.bn1.running_var) at epoch 2" in line, line
    assert "kept the last good checkpoint (epoch 1, step 2)" in line
    ckpt = checkpoints.load(RunDir(tmp_path / "runs" / "tiny").last_ckpt)
    assert ckpt["epoch"] == 1 and torch.isfinite(ckpt["model"]["encoder.backbone.bn1.running_var"]).all()


def test_checkpoint_of_another_architecture(tmp_path, capsys):
    run = train(tiny_config(tmp_path))
    cfg = json.loads(run.config_path.read_text())
    cfg["model"]["cifar_stem"] = True
    cfg["optim"]["epochs"] = 3
    run.config_path.write_text(json.dumps(cfg))
    code, err = run_main(["--resume", "tiny", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert "another architecture (cifar_stem: checkpoint False vs config True)" in one_line_error(code, err)
    assert run.status()["state"] == "failed"


def test_truncated_checkpoint_on_resume(tmp_path, capsys):
    run = train(tiny_config(tmp_path))
    run.last_ckpt.write_bytes(run.last_ckpt.read_bytes()[:1000])
    code, err = run_main(["--resume", "tiny", "--runs-dir", str(tmp_path / "runs"), "--epochs", "3"], capsys)
    assert "truncated or corrupt" in one_line_error(code, err)


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one(tmp_path, monkeypatch, capsys):
    import errno

    real_save = torch.save
    calls = {"n": 0}

    def disk_fills_up(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 1's last.pt and backbone.pt fit; epoch 2's do not
            f.write(b"\0" * 100_000)  # half a file, as a full disk leaves it
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(checkpoints.torch, "save", disk_fills_up)
    code, err = run_main(tiny_args(tmp_path), capsys)
    line = one_line_error(code, err)
    assert "cannot write the checkpoint of epoch 2, step 4" in line and "No space left on device" in line
    assert "last.pt still holds epoch 1, step 2" in line and "--resume tiny" in line
    run = RunDir(tmp_path / "runs" / "tiny")
    assert run.status()["state"] == "failed" and "No space left" in run.status()["message"]
    assert checkpoints.load(run.last_ckpt)["epoch"] == 1
    assert not [p.name for p in run.path.iterdir() if ".tmp" in p.name]  # nothing left to keep the disk full
    monkeypatch.setattr(checkpoints.torch, "save", real_save)  # space freed: the resume works
    assert run_main(["--resume", "tiny", "--runs-dir", str(tmp_path / "runs")], capsys)[0] == 0
