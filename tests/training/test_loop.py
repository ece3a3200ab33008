"""The loop (training/loop.py): it learns, a NaN stops it with advice, torch.compile falls back to eager."""

import pytest
import torch

from simclr_core.runs import checkpoints
from simclr_core.runs.rundir import RunDir
from simclr_core.training import train

from tests.conftest import tiny_args, tiny_config
from tests.training.common import one_line_error, run_main


@pytest.mark.parametrize("method", ["simclr", "moco_v2", "byol"])
def test_one_epoch_lowers_the_loss(tmp_path, method):
    cfg = tiny_config(tmp_path, epochs=1, lr=0.3, warmup_epochs=0)
    cfg.data.subset = 512  # one epoch of 16 steps, a loss line per step
    cfg.views.crop_scale_min, cfg.views.jitter_strength = 0.5, 0.5  # milder views: visible progress in 16 steps
    cfg.run.knn_every = 0
    cfg.method.name, cfg.method.queue_size = method, 64
    if method == "moco_v2":
        # Its keys come from a slowly moving copy, and the queue starts as random vectors (then fills
        # with real, harder keys, which raises the loss at first): in 16 steps progress shows with
        # near-identical views and a key encoder that follows faster.
        cfg.views.crop_scale_min, cfg.views.jitter_strength, cfg.method.ema = 0.9, 0.0, 0.9
        # MoCo v2's own head has no BN: its first projections are all alike, the loss sits near
        # ln(K + 1) once the queue fills, and 16 steps do not show the climb down; SimCLR's head
        # (BN on the output) spreads them from step one, and the queue and EMA are the same.
        cfg.model.head = "simclr"
    run = train(cfg)
    losses = [m["loss"] for m in run.metrics("step")]
    assert len(losses) == 16
    # Seeds 0-2 measured: the mean falls by 0.13-0.45 (first four steps -> last four).
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1, losses


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    import simclr_core.methods.simclr as methods

    real = methods.nt_xent
    calls = {"n": 0}

    def nan_from_epoch_two(z1, z2, t, **kw):
        calls["n"] += 1
        loss = real(z1, z2, t, **kw)
        return loss * float("nan") if calls["n"] > 2 else loss

    monkeypatch.setattr(methods, "nt_xent", nan_from_epoch_two)
    code, err = run_main(tiny_args(tmp_path), capsys)
    line = one_line_error(code, err)
    assert "loss became nan at epoch 2" in line and "kept the last good checkpoint (epoch 1, step 2)" in line
    run = RunDir(tmp_path / "runs" / "tiny")
    assert run.status()["state"] == "failed" and "nan" in run.status()["message"]
    ckpt = checkpoints.load(run.last_ckpt)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    # The advice can be followed: resume with the learning rate it names, which config.json records.
    advice = line.split("resume with a lower learning rate: ")[1].split(" (or")[0].split()
    assert advice[:2] == ["--resume", "tiny"] and advice[2] == "--lr"
    monkeypatch.setattr(methods, "nt_xent", real)
    code, err = run_main([*advice, "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    assert run.status()["state"] == "finished" and run.config().optim.lr == float(advice[3])


def test_nan_before_any_checkpoint_says_so(tmp_path, monkeypatch, capsys):
    import simclr_core.methods.simclr as methods

    monkeypatch.setattr(methods, "nt_xent", lambda z1, z2, t, **kw: (z1.sum() + z2.sum()) * float("nan"))
    code, err = run_main(tiny_args(tmp_path), capsys)
    line = one_line_error(code, err)
    assert "loss became nan at epoch 1" in line and "no checkpoint was written before it" in line
    assert "epoch 0" not in line and not (tmp_path / "runs" / "tiny" / "last.pt").exists()


def test_compile_failure_falls_back_to_eager(tmp_path, monkeypatch):
    def broken_compile(model, **kw):
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler found")

        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = tiny_config(tmp_path)
    cfg.run.compile = True
    run = train(cfg)
    assert run.status()["state"] == "finished"
    assert "torch.compile failed (RuntimeError: no C++ compiler found); running eager" in run.log_path.read_text()
    straight = train(tiny_config(tmp_path, "eager"))  # the fallback computes exactly what eager does
    a, b = checkpoints.load(run.last_ckpt), checkpoints.load(straight.last_ckpt)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.slow
def test_compiled_run_matches_eager_closely(tmp_path):
    cfg = tiny_config(tmp_path, "compiled", epochs=1)
    cfg.run.compile, cfg.run.knn_every = True, 0
    compiled = train(cfg)
    assert "torch.compile failed" not in compiled.log_path.read_text()
    eager_cfg = tiny_config(tmp_path, "eager", epochs=1)
    eager_cfg.run.knn_every = 0
    eager = train(eager_cfg)
    la = [m["epoch_loss"] for m in compiled.metrics("epoch")]
    lb = [m["epoch_loss"] for m in eager.metrics("epoch")]
    assert la == pytest.approx(lb, rel=1e-3)


def test_progressive_resolution_trains_on_growing_views(tmp_path, monkeypatch):
    """Early steps see small views, later ones the full size; the size follows the step, so a resume agrees."""
    from simclr_core.training import loop

    sizes = []
    real = loop.two_views

    def recording(x, **kw):
        sizes.append(kw["size"])
        return real(x, **kw)

    monkeypatch.setattr(loop, "two_views", recording)
    cfg = tiny_config(tmp_path, epochs=4)  # 64 digits at 16 px, 2 steps per epoch: 8 steps
    cfg.views.progressive_start, cfg.views.progressive_share = 0.5, 0.5
    run = train(cfg)
    assert sizes == [8, 8, 16, 16, 16, 16, 16, 16]  # 8 px, then 16 px from half the run on
    assert run.status()["state"] == "finished"
    assert RunDir(run.path).config().views.progressive_start == 0.5  # config.json records it
