import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import simclr_core.train as train_mod
from simclr_core import checkpoints
from simclr_core.checkpoints import load_backbone
from simclr_core.runs import RunDir
from simclr_core.train import main, train

from tests.conftest import REPO, tiny_args, tiny_config


def run_main(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def test_tiny_run_writes_the_run_folder(tiny):
    run = train(tiny)
    files = {p.name for p in run.path.iterdir()}
    assert {"config.json", "metrics.jsonl", "status.json", "last.pt", "backbone.pt", "backbone.json",
            "train.log"} <= files
    status = run.status()
    assert status["state"] == "finished" and status["epoch"] == 2 and status["step"] == 4
    metrics = run.metrics()
    assert all({"epoch", "step", "loss", "lr", "images_per_s"} <= set(m) for m in metrics)
    epochs = [m for m in metrics if "epoch_loss" in m]
    assert [m["epoch"] for m in epochs] == [1, 2]
    assert all(0 <= m["knn_top1"] <= m["knn_top5"] <= 100 for m in epochs)
    saved = json.loads(run.config_path.read_text())
    assert saved["model"]["cifar_stem"] is False and saved["views"]["blur_prob"] == 0.0  # resolved, recorded
    ckpt = checkpoints.load(run.last_ckpt)
    assert (ckpt["epoch"], ckpt["step"]) == (2, 4)
    backbone = load_backbone(run.backbone_path)  # a plain torchvision-layout ResNet
    assert backbone(torch.rand(2, 3, 16, 16)).shape == (2, 256)


@pytest.mark.parametrize("method", ["simclr", "moco_v2", "byol"])
def test_one_epoch_lowers_the_loss(tmp_path, method):
    cfg = tiny_config(tmp_path, epochs=1, lr=0.3, warmup_epochs=0)
    cfg.data.subset = 512  # one epoch of 16 steps, a loss line per step
    cfg.views.crop_scale_min, cfg.views.jitter_strength = 0.5, 0.5  # milder views: visible progress in 16 steps
    cfg.run.knn_every = 0
    cfg.model.method, cfg.method.queue_size = method, 64
    if method == "moco_v2":
        # Its keys come from a slowly moving copy, and the queue starts as random vectors (then fills
        # with real, harder keys, which raises the loss at first): in 16 steps progress shows with
        # near-identical views and a key encoder that follows faster.
        cfg.views.crop_scale_min, cfg.views.jitter_strength, cfg.method.ema = 0.9, 0.0, 0.9
    run = train(cfg)
    losses = [m["loss"] for m in run.metrics() if "epoch_loss" not in m]
    assert len(losses) == 16
    # Seeds 0-2 measured: the mean falls by 0.13-0.45 (first four steps -> last four).
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1, losses


def train_until_stopped(cfg, monkeypatch, step: int):
    """Train ``cfg`` as if a stop were asked right after optimiser step ``step``."""
    real = train_mod.stop_requested

    def stop_once(s):
        if s.step == step and s.stop_reason is None:
            s.stop_reason = "test"
        return real(s)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "stop_requested", stop_once)
        return train(cfg)


def method_config(tmp_path, name: str, method: str):
    cfg = tiny_config(tmp_path, name)
    cfg.model.method, cfg.method.queue_size = method, 48  # a queue that wraps within the run
    return cfg


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
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    ea = [(m["epoch"], m["epoch_loss"], m["knn_top1"]) for m in straight.metrics() if "epoch_loss" in m]
    eb = [(m["epoch"], m["epoch_loss"], m["knn_top1"]) for m in stopped.metrics() if "epoch_loss" in m]
    assert ea == eb


def test_finished_run_can_be_extended(tmp_path, capsys):
    run = train(tiny_config(tmp_path))
    runs = str(tmp_path / "runs")
    code, err = run_main(["--resume", "tiny", "--runs-dir", runs], capsys)
    assert code == 2 and "already finished 2 epochs; pass --epochs N" in err
    code, err = run_main(["--resume", "tiny", "--runs-dir", runs, "--epochs", "3"], capsys)
    assert code == 0, err
    assert run.status()["epoch"] == 3 and run.config().optim.epochs == 3


def one_line_error(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_user_errors_are_one_line(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(tiny_args(tmp_path)) == 0
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken" / "cat").mkdir(parents=True)
    (tmp_path / "broken" / "cat" / "a.jpg").write_bytes(b"not a jpeg")
    folder = ["--dataset", "folder", "--data-path"]
    cases = [
        (tiny_args(tmp_path), "already exists"),
        (["--resume", "nope", "--runs-dir", runs], "no run named 'nope'"),
        (["--resume", "tiny", "--runs-dir", runs, "--backbone", "resnet18"], "cannot change --backbone"),
        (tiny_args(tmp_path, "big") + ["--batch-size", "100"], "larger than the 64 training images"),
        (tiny_args(tmp_path, "x") + ["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
        (tiny_args(tmp_path, "x") + folder + [str(tmp_path / "empty")], "no images found in"),
        (tiny_args(tmp_path, "x") + folder + [str(tmp_path / "broken")], "none of the 1 image files"),
        (tiny_args(tmp_path, "../up"), "invalid run name"),
        (tiny_args(tmp_path, "f") + ["--dataset", "folder", "--data-path", str(tmp_path / "none")], "does not exist"),
        (tiny_args(tmp_path, "t") + ["--temperature", "0"], "--temperature must be a positive"),
        (tiny_args(tmp_path, "e") + ["--epochs", "0"], "--epochs must be a positive"),
    ]
    for argv, match in cases:
        try:
            code, err = run_main(argv, capsys)
        except SystemExit as e:  # argparse's own checks
            code, err = e.code, capsys.readouterr().err
        assert match in one_line_error(code, err), (argv, err)
    assert not (tmp_path / "up").exists()


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
    assert "loss became nan at epoch 2" in one_line_error(code, err)
    run = RunDir(tmp_path / "runs" / "tiny")
    assert run.status()["state"] == "failed" and "nan" in run.status()["message"]
    ckpt = checkpoints.load(run.last_ckpt)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def _spawn(tmp_path, name, epochs="200"):
    args = tiny_args(tmp_path, name) + ["--epochs", epochs, "--knn-every", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "simclr_core.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(run: RunDir, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(run.metrics()) >= 3:
            return
        time.sleep(0.2)
    raise AssertionError(f"training did not start: {proc.communicate()}")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["STOP file", "SIGTERM", "SIGINT"])
def test_stop_cleanly_in_a_real_process(tmp_path, how):
    proc = _spawn(tmp_path, "bg")
    run = RunDir(tmp_path / "runs" / "bg")
    _wait_for_training(run, proc)
    if how == "STOP file":
        run.request_stop()
    else:
        proc.send_signal(getattr(signal, how))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    st = run.status()
    assert st["state"] == "stopped" and how in st["message"], st
    ckpt = checkpoints.load(run.last_ckpt)
    assert ckpt["step"] == st["step"] > 0
    assert not run.stop_requested()


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
    la = [m["epoch_loss"] for m in compiled.metrics() if "epoch_loss" in m]
    lb = [m["epoch_loss"] for m in eager.metrics() if "epoch_loss" in m]
    assert la == pytest.approx(lb, rel=1e-3)


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
