"""last.pt (training/state.py): exact resume, never a non-finite weight, a checkpoint that does not fit."""

import json
import re

import pytest
import torch

from simclr_core.runs import checkpoints
from simclr_core.runs.rundir import RunDir
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


# ---- issue 16 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda c: c.update(epoch="two"), r"damaged \('epoch' is 'two', not a whole number\)"),
        (lambda c: c.pop("optimizer"), r"damaged \(it has no 'optimizer': what a resume continues from\)"),
        (lambda c: c["optimizer"]["param_groups"].append({"params": [999]}), "its optimiser or RNG state does not fit"),
    ],
    ids=["epoch-text", "no-optimizer", "optimizer-of-another-model"],
)
def test_a_damaged_last_pt_on_resume_is_one_line(tmp_path, capsys, damage, match):
    run = train(tiny_config(tmp_path))
    ckpt = checkpoints.load(run.last_ckpt)
    damage(ckpt)
    checkpoints.save_atomic(ckpt, run.last_ckpt)
    kept = run.last_ckpt.read_bytes()
    code, err = run_main(["--resume", "tiny", "--runs-dir", str(tmp_path / "runs"), "--epochs", "3"], capsys)
    line = one_line_error(code, err)
    assert re.search(match, line) and f"checkpoint {run.last_ckpt}" in line and "restore it from a copy" in line
    st = run.status()
    assert st["state"] == "failed" and st["message"] == line.removeprefix("error: ")
    assert run.last_ckpt.read_bytes() == kept  # the run keeps its work


def test_a_full_disk_reported_by_torchs_zip_writer_gets_the_full_disk_message(tmp_path, monkeypatch, capsys):
    """Room for the logs, not for a checkpoint: torch.save raises RuntimeError("unexpected pos"), not OSError."""
    import shutil
    from collections import namedtuple

    real_save, real_usage = torch.save, shutil.disk_usage
    calls = {"n": 0}

    def disk_fills_up(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 1's last.pt and backbone.pt fit; epoch 2's do not
            f.write(b"\0" * 100_000)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1264128 vs 1264024")
        return real_save(obj, f, *a, **k)

    def full_while_writing(path):  # the half-written temp file took the last free block
        full = calls["n"] > 2
        return namedtuple("u", "total used free")(1, 1, 0) if full else real_usage(path)

    monkeypatch.setattr(checkpoints.torch, "save", disk_fills_up)
    monkeypatch.setattr(shutil, "disk_usage", full_while_writing)
    code, err = run_main(tiny_args(tmp_path), capsys)
    line = one_line_error(code, err)
    assert line == (
        f"error: cannot write the checkpoint of epoch 2, step 4 in {tmp_path / 'runs' / 'tiny'} (No space left on "
        "device); last.pt still holds epoch 1, step 2. Free space there (or make it writable), then resume with "
        "--resume tiny"
    )
    run = RunDir(tmp_path / "runs" / "tiny")
    assert run.status()["state"] == "failed" and run.status()["message"] == line.removeprefix("error: ")
    assert checkpoints.load(run.last_ckpt)["epoch"] == 1
    assert not [p.name for p in run.path.iterdir() if ".tmp" in p.name or p.name == ".status.reserve"]


def test_nan_advice_after_a_wild_lr_is_the_recipes_rate_not_half(tmp_path):
    """Halving --lr 1e6 takes about twenty resumes before it trains; the advice goes back to the default at once."""
    from types import SimpleNamespace

    from simclr_core.training.state import diverged

    cfg = tiny_config(tmp_path)
    s = SimpleNamespace(cfg=cfg, saved_at=(1, 2), run=RunDir(tmp_path / "runs" / "tiny"))
    cfg.optim.lr = 1e6
    message = str(diverged(s, "loss became nan at epoch 2, step 3"))
    assert message == (
        "loss became nan at epoch 2, step 3; kept the last good checkpoint (epoch 1, step 2); likely cause: "
        "--lr 1e+06 is 133,333,333x the usual 0.0075 for sgd at batch 32; resume with --resume tiny --lr 0.0075"
    )
    cfg.optim.lr = 0.02  # near the default (0.0075): halving is the small step that fits
    assert "resume with a lower learning rate: --resume tiny --lr 0.01" in str(diverged(s, "loss became nan"))
    cfg.method.temperature = 0.01  # a NaN at a tiny temperature names the temperature, not the learning rate
    assert str(diverged(s, "loss became nan")).endswith(
        "likely cause: --temperature 0.01 is far below simclr's usual 0.5; resume with --resume tiny --temperature 0.5"
    )
