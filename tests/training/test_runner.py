"""A run's lifecycle (training/runner.py): its files, clean stops in a real process, one writer."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simclr_core.cli.common import config_flags
from simclr_core.cli.train import main, train
from simclr_core.runs import checkpoints
from simclr_core.runs.checkpoints import load_trunk
from simclr_core.runs.progress import summarize
from simclr_core.runs.rundir import RunDir

from tests.conftest import REPO, tiny_args, tiny_config
from tests.training.common import (
    spawn_training,
    wait_for_training,
)


def test_tiny_run_writes_the_run_folder(tiny):
    run = train(tiny)
    files = {p.name for p in run.path.iterdir()}
    assert {
        "config.json",
        "metrics.jsonl",
        "status.json",
        "last.pt",
        "backbone.pt",
        "backbone.json",
        "train.log",
    } <= files
    status = run.status()
    assert status["state"] == "finished" and status["epoch"] == 2 and status["step"] == 4
    metrics = run.metrics()
    assert all({"epoch", "step", "loss", "lr", "images_per_s"} <= set(m) for m in metrics)
    epochs = [m for m in metrics if m["kind"] == "epoch"]
    assert [m["epoch"] for m in epochs] == [1, 2]
    assert all(0 <= m["knn_top1"] <= m["knn_top5"] <= 100 for m in epochs)
    saved = json.loads(run.config_path.read_text())
    assert saved["model"]["cifar_stem"] is False and saved["views"]["blur_prob"] == 0.0  # resolved, recorded
    assert saved["views"]["jitter_strength"] == 0.5  # "auto" at 16 px: the paper's CIFAR strength, recorded
    ckpt = checkpoints.load(run.last_ckpt)
    assert (ckpt["epoch"], ckpt["step"]) == (2, 4)
    backbone = load_trunk(run.backbone_path)  # a plain torchvision-layout ResNet
    assert backbone(torch.rand(2, 3, 16, 16)).shape == (2, 256)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["STOP file", "SIGTERM", "SIGINT"])
def test_stop_cleanly_in_a_real_process(tmp_path, how):
    proc = spawn_training(tmp_path, "bg")
    run = RunDir(tmp_path / "runs" / "bg")
    wait_for_training(run, proc)
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


@pytest.mark.slow
def test_two_resumes_at_once_one_writer(tmp_path, capsys):
    """Both start before either has written status.json; the OS lock lets exactly one train."""
    assert main(tiny_args(tmp_path)) == 0
    run = RunDir(tmp_path / "runs" / "tiny")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [
        sys.executable,
        "-m",
        "simclr_core.train",
        "--resume",
        "tiny",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--knn-every",
        "0",
    ]
    procs = [
        subprocess.Popen(
            argv + ["--epochs", epochs], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for epochs in ("30", "40")
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = next(err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 2)
    line = loser.strip().splitlines()[-1]
    assert re.search(r"error: run 'tiny' (is being written by another process \(pid \d+|is running)", line), loser
    steps = [m["step"] for m in run.metrics("step")]
    assert len(steps) == len(set(steps)) and steps == sorted(steps)  # no epoch written twice
    winner = 30 if procs[0].returncode == 0 else 40
    assert run.status()["epoch"] == winner == run.config().optim.epochs


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "runs" / "moco-v0"


def test_a_run_folder_of_0_2_reads_and_trains_on(tmp_path, monkeypatch, capsys):
    """``tests/fixtures/runs/moco-v0`` was written by 0.2 (commit 5afacf7): ``model.method`` and
    ``optim.temperature`` in config.json, metrics lines without a kind. Its weights are left out (20 MB),
    so its resume starts from step 0, as a run stopped before its first checkpoint does."""
    runs = tmp_path / "checkpoints"
    shutil.copytree(FIXTURE, runs / "moco-v0")
    monkeypatch.chdir(tmp_path)  # its data_dir is "data"
    run = RunDir(runs / "moco-v0")
    cfg = run.config()
    assert (cfg.method.name, cfg.method.temperature, cfg.method.queue_size) == ("moco_v2", 0.2, 64)
    assert (run.status()["state"], run.status()["epoch"]) == ("finished", 2)
    assert [m["step"] for m in run.metrics("step")] == [1, 2, 3, 4]
    epochs = run.metrics("epoch")
    assert [m["epoch"] for m in epochs] == [1, 2] and epochs[-1]["knn_top1"] == pytest.approx(57.78, abs=0.01)
    assert [(r["epoch"], round(r["knn_top1"], 2)) for r in run.eval_results()] == [(2, 76.11)]
    summary = summarize(run)
    assert (summary.method, summary.epoch, summary.epochs) == ("moco_v2", 2, 2)

    assert main(["--resume", "moco-v0", "--runs-dir", str(runs), "--epochs", "3"]) == 0, capsys.readouterr().err
    saved = json.loads(run.config_path.read_text())
    assert (saved["method"]["name"], saved["method"]["temperature"]) == ("moco_v2", 0.2)
    assert "method" not in saved["model"] and "temperature" not in saved["optim"]
    assert (run.status()["state"], run.status()["epoch"]) == ("finished", 3)
    lines = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [(m["kind"], m["step"]) for m in lines if m["kind"] == "epoch"] == [("epoch", 2), ("epoch", 4), ("epoch", 6)]
    assert run.eval_results()[0]["knn_top1"] == pytest.approx(76.11, abs=0.01)  # kept across the resume


# ---- issue 16: things in the way on resume, and a disk that fills -------------------------------------------


@pytest.mark.parametrize(
    "name, what", [("STOP", "where a STOP file asks the run to stop"), ("train.log", "where the run keeps its log")]
)
def test_a_folder_in_place_of_a_run_file_on_resume(tmp_path, capsys, name, what):
    assert main(tiny_args(tmp_path)) == 0
    run = RunDir(tmp_path / "runs" / "tiny")
    (run.path / name).unlink(missing_ok=True)
    (run.path / name).mkdir()
    code = main(["--resume", "tiny", "--runs-dir", str(tmp_path / "runs"), "--epochs", "3"])
    err = capsys.readouterr().err
    assert (
        code == 2
        and err == f"error: {run.path / name} is a folder, {what}; move it out of the run folder, then resume\n"
    )
    st = run.status()
    assert st["state"] == "failed" and st["message"] == err.strip().removeprefix("error: ")
    assert checkpoints.load(run.last_ckpt)["epoch"] == 2 and (run.path / name).is_dir()  # nothing of it removed
    (run.path / name).rmdir()
    assert main(["--resume", "tiny", "--runs-dir", str(tmp_path / "runs"), "--epochs", "3"]) == 0


def test_the_last_status_is_written_when_the_disk_is_full(tmp_path, capsys, monkeypatch):
    """Every write fails as on a full disk once training started: the run still records "failed", with its
    message, in the space it set aside at the start (``.status.reserve``)."""
    import errno

    from simclr_core.runs import rundir as runs
    from simclr_core.training import loop

    real = runs.write_json_atomic
    full = {"on": False}

    def unless_full(path, obj):
        if full["on"] and run.status_reserve_path.exists():  # only the space given back by the reserve is free
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    def fill_the_disk(s, epoch, bar):
        full["on"] = True
        raise OSError(errno.ENOSPC, "No space left on device", str(s.run.metrics_path))

    run = RunDir(tmp_path / "runs" / "tiny")
    monkeypatch.setattr(runs, "write_json_atomic", unless_full)
    monkeypatch.setattr(loop, "log_step", fill_the_disk)
    code = main(tiny_args(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"error: cannot write {run.metrics_path} (No space left on device); free space there (or make it "
        "writable), then resume with --resume tiny"
    )
    assert run.status()["state"] == "failed" and "No space left on device" in run.status()["message"]
    assert not run.status_reserve_path.exists()


@pytest.mark.slow
def test_a_real_full_disk_ends_with_a_message_and_a_status(tmp_path, tmpfs):
    """The CLI on a tmpfs too small for the run: a traceback, or status.json left "running", before issue 16."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(*argv):
        proc = subprocess.run(
            [sys.executable, "-m", "simclr_core.train", *argv], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode, proc.stderr.strip().splitlines()[-1]

    # room for the logs, not for a checkpoint: torch's zip writer fails with RuntimeError("unexpected pos ...")
    small = tmpfs("4m")
    code, line = cli(*tiny_args(tmp_path), "--runs-dir", str(small))
    run = RunDir(small / "tiny")
    assert code == 2 and line.startswith("error: cannot write the checkpoint of epoch 1, step 2 in "), line
    assert "(No space left on device); no checkpoint yet. Free space there" in line
    assert run.status()["state"] == "failed" and run.status()["message"] == line.removeprefix("error: ")
    assert not [p.name for p in run.path.iterdir() if ".tmp" in p.name or "reserve" in p.name]
    # space freed (the tmpfs grown): the resume trains to the end
    subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
    proc = subprocess.run(
        [sys.executable, "-m", "simclr_core.train", "--resume", "tiny", "--runs-dir", str(small)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and run.status()["state"] == "finished", proc.stderr

    # the disk fills completely before the first checkpoint: the logs, the metrics and status.json itself fail
    for size in ("24k", "96k"):
        tiny = tmpfs(size)
        code, line = cli(*tiny_args(tmp_path), "--runs-dir", str(tiny))
        run = RunDir(tiny / "tiny")
        assert code == 2 and "No space left on device" in line and "--resume tiny" in line, (size, line)
        st = run.status()
        assert st["state"] == "failed" and st["message"] == line.removeprefix("error: "), (size, st)  # not "died"


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are bytes; others are Unicode")
def test_a_folder_with_file_names_that_are_not_utf8_trains(tmp_path, capsys):
    """Its images are trained on, and the note naming a skipped one is written to train.log as text."""
    from PIL import Image

    root = os.fsencode(tmp_path / "imgs")
    for c, cls in enumerate((b"cats", b"d\xffogs")):
        os.makedirs(os.path.join(root, cls))
        for i in range(12):
            name = os.path.join(root, cls, b"%d\xff.png" % i)
            Image.new("RGB", (16, 16), (20 * i, 100 * c, 50)).save(os.fsdecode(name))
    with open(os.path.join(root, b"cats", b"bad\xfe.png"), "wb") as f:
        f.write(b"not a png")
    cfg = tiny_config(tmp_path)
    cfg.data.dataset, cfg.data.data_path, cfg.data.subset, cfg.optim.batch_size = "folder", os.fsdecode(root), None, 8
    args = config_flags(cfg)
    assert main([*args, "--epochs", "1"]) == 0, capsys.readouterr().err
    run = RunDir(tmp_path / "runs" / "tiny")
    assert run.status()["state"] == "finished"
    log = run.log_path.read_text()
    assert "; 19 images, 2 steps per epoch; skipped 1 file(s)" in log  # 24 less the held-out fifth (5)
    assert "(1 unreadable image, e.g. cats/bad\\xfe.png)" in log
