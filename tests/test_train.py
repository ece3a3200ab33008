import json
import os
import re
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
    assert saved["views"]["jitter_strength"] == 0.5  # "auto" at 16 px: the paper's CIFAR strength, recorded
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
        # MoCo v2's own head has no BN: its first projections are all alike, the loss sits near
        # ln(K + 1) once the queue fills, and 16 steps do not show the climb down; SimCLR's head
        # (BN on the output) spreads them from step one, and the queue and EMA are the same.
        cfg.model.head = "simclr"
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
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
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
    (tmp_path / "a-file").write_text("not a folder")
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
        (tiny_args(tmp_path, "e") + ["--epochs", "0"], "--epochs must be at least 1"),
        (tiny_args(tmp_path, "k") + ["--knn-k", "0"], "--knn-k must be at least 1"),  # was: fails after an epoch
        (tiny_args(tmp_path, "r") + ["--runs-dir", str(tmp_path / "a-file")], "choose another --runs-dir"),
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


def _single_split_folder(root, n_per_class=20):
    from PIL import Image

    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            Image.new("RGB", (16, 16), (i * 12, 80 if c == "cat" else 200, 0)).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("transductive", [False, True])
def test_a_single_split_folder_keeps_its_held_out_fifth_unseen(tmp_path, transductive):
    from simclr_core import data
    from simclr_core.evaluate import evaluate_run

    cfg = tiny_config(tmp_path, epochs=1, batch_size=8)
    cfg.data.dataset, cfg.data.data_path, cfg.data.subset = "folder", str(_single_split_folder(tmp_path / "pets")), None
    cfg.data.transductive = transductive
    run = train(cfg)
    rest, fifth = data.held_out(cfg.data, "all")
    assert (len(rest), len(fifth)) == (32, 8)
    seen = data.pretrain_split(run.config().data, "all")
    assert len(seen) == (40 if transductive else 32) and (set(fifth.paths) <= set(seen.paths)) == transductive
    assert f"{len(seen)} images" in run.log_path.read_text()
    result = evaluate_run(run, probe=False, k=5)
    assert result["n_query"] == 8 and result["n_bank"] == 32
    assert result["query_split"] == ("all (held-out fifth, transductive)" if transductive else "all (held-out fifth)")
    quick = evaluate_run(run, probe=False, k=5, max_bank=10)  # the same queries with a smaller bank
    assert quick["n_query"] == 8 and quick["n_bank"] == 10


def test_runs_from_before_the_option_stay_transductive(tmp_path):
    run = train(tiny_config(tmp_path))
    saved = json.loads(run.config_path.read_text())
    assert saved["data"]["transductive"] is False
    del saved["data"]["transductive"]  # as written by earlier versions, which pre-trained on everything
    run.config_path.write_text(json.dumps(saved))
    assert run.config().data.transductive is True


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


def test_moco_queue_larger_than_the_dataset_is_warned_about(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1)
    cfg.model.method, cfg.method.queue_size = "moco_v2", 100
    run = train(cfg)
    assert "the MoCo queue (--queue-size 100) is larger than the 64 training images" in run.log_path.read_text()


@pytest.mark.slow
def test_two_resumes_at_once_one_writer(tmp_path, capsys):
    """Both start before either has written status.json; the OS lock lets exactly one train."""
    assert main(tiny_args(tmp_path)) == 0
    run = RunDir(tmp_path / "runs" / "tiny")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "simclr_core.train", "--resume", "tiny", "--runs-dir", str(tmp_path / "runs"),
            "--knn-every", "0"]
    procs = [subprocess.Popen(argv + ["--epochs", epochs], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for epochs in ("30", "40")]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = next(err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 2)
    line = loser.strip().splitlines()[-1]
    assert re.search(r"error: run 'tiny' (is being written by another process \(pid \d+|is running)", line), loser
    steps = [m["step"] for m in run.metrics() if "epoch_loss" not in m]
    assert len(steps) == len(set(steps)) and steps == sorted(steps)  # no epoch written twice
    winner = 30 if procs[0].returncode == 0 else 40
    assert run.status()["epoch"] == winner == run.config().optim.epochs
