"""The probe: a stratified subset, a frame per monitor epoch, continued without duplicates on resume."""

import json

import numpy as np
import pytest
import torch

from simclr_core.cli.train import main, train
from simclr_core.explorer import probe
from simclr_core.models import Encoder

from tests.conftest import tiny_config


def test_choose_is_stratified_sorted_and_repeatable():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])  # 200 images, unbalanced
    rows = probe.choose(labels, 40, seed=0)
    assert len(rows) == 40 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows]).tolist() == [20, 10, 6, 4]  # each class in proportion
    assert np.array_equal(probe.choose(labels, 40, seed=0), rows)
    assert probe.choose(labels, 500).tolist() == list(range(200))  # more than there are: all
    odd = probe.choose(labels, 7, seed=1)  # shares that do not divide: rounded, still 7 in all
    assert len(odd) == 7 and set(np.bincount(labels[odd], minlength=4).tolist()) <= {0, 1, 2, 3, 4}
    unlabelled = probe.choose(np.full(50, -1), 10)
    assert len(unlabelled) == 10 and len(set(unlabelled.tolist())) == 10


def test_record_writes_a_frame_and_returns_health(tmp_path):
    torch.manual_seed(0)
    enc = Encoder("resnet_mini", cifar_stem=False, proj_hidden_dim=32, proj_out_dim=16)
    images = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8)
    view = {"size": 16, "crop_scale": (0.5, 1.0), "blur_prob": 0.0}
    h = probe.record(enc, images, view, tmp_path, 3, torch.device("cpu"), batch_size=10)
    assert set(h) >= {"rankme_h", "rankme_z", "alignment", "uniformity"}
    assert 1 <= h["rankme_h"] <= 24 and 0 <= h["alignment"] <= 4 and h["uniformity"] <= 0
    [(epoch, frame)] = probe.read_frames(tmp_path, rows=24)
    assert epoch == 3 and frame.shape == (24, enc.feature_dim)
    again = probe.record(enc, images, view, tmp_path, 3, torch.device("cpu"), batch_size=10)
    assert again == pytest.approx(h)  # the probe's own view generator: the same views every time
    assert enc.training  # left as it was


def test_half_written_and_foreign_frames_are_ignored(tmp_path):
    d = tmp_path / "probe"
    d.mkdir()
    np.save(d / "epoch-0001.npy", np.ones((5, 4), np.float16))
    np.save(d / "epoch-0002.npy", np.ones((5, 4), np.float16))
    raw = (d / "epoch-0002.npy").read_bytes()
    (d / "epoch-0002.npy").write_bytes(raw[: len(raw) // 2])  # a writer killed half-way
    np.save(d / "epoch-0003.npy", np.ones((4, 4), np.float16))  # wrong number of rows
    (d / ".epoch-0004.123.tmp.npy").write_bytes(b"partial")
    assert [e for e, _ in probe.read_frames(tmp_path, rows=5)] == [1]
    assert probe.frame_epochs(tmp_path) == [1, 2, 3]  # names only; read_frames decides what is whole
    probe.drop_frames_after(tmp_path, 2)
    assert sorted(p.name for p in d.iterdir()) == ["epoch-0001.npy", "epoch-0002.npy"]


def test_training_records_a_frame_per_monitor_epoch(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.optim.epochs, cfg.run.knn_every = 3, 2
    run = train(cfg)
    subset = json.loads((run.path / "probe" / "subset.json").read_text())
    assert subset["split"] == "test" and len(subset["rows"]) == 360  # the whole 360-image query split
    assert probe.frame_epochs(run.path) == [2, 3]  # every 2nd epoch and the last
    epochs = run.metrics("epoch")
    assert ["rankme_h" in m for m in epochs] == [False, True, True]
    assert all(m["rankme_h"] > 1 and m["uniformity"] < 0 for m in epochs[1:])
    assert "RankMe" in run.log_path.read_text()


def test_resume_continues_the_frames_without_duplicates(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    cfg.run.probe_size = 50
    run = train(cfg)
    rows = json.loads((run.path / "probe" / "subset.json").read_text())["rows"]
    np.save(run.path / "probe" / "epoch-0007.npy", np.zeros((50, 4), np.float16))  # from a killed longer run
    assert main(["--resume", "tiny", "--runs-dir", str(tmp_path / "runs"), "--epochs", "3"]) == 0, capsys.readouterr()
    assert probe.frame_epochs(run.path) == [1, 2, 3]
    assert json.loads((run.path / "probe" / "subset.json").read_text())["rows"] == rows  # the same images
    health = [m["epoch"] for m in run.metrics() if "rankme_h" in m]
    assert health == [1, 2, 3]


def test_no_probe_flag_and_unlabelled_runs(tmp_path):
    cfg = tiny_config(tmp_path, "off")
    cfg.run.probe = False
    run = train(cfg)
    assert not (run.path / "probe").exists() and not any("rankme_h" in m for m in run.metrics())

    # a folder without class sub-folders: no kNN, but the probe (from the training images) and its health
    from PIL import Image

    folder = tmp_path / "plain"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = tiny_config(tmp_path, "plain")
    cfg.data.dataset, cfg.data.data_path, cfg.data.subset = "folder", str(folder), None
    run = train(cfg)
    epochs = run.metrics("epoch")
    assert not any("knn_top1" in m for m in epochs) and all("rankme_h" in m for m in epochs)
    assert json.loads((run.path / "probe" / "subset.json").read_text())["split"] == "all"


@pytest.mark.parametrize("argv,match", [(["--probe-size", "0"], "--probe-size must be at least 1")])
def test_bad_probe_size(tmp_path, capsys, argv, match):
    from tests.conftest import tiny_args

    assert main(tiny_args(tmp_path) + argv) == 2
    assert match in capsys.readouterr().err


def test_a_frame_that_does_not_fit_leaves_no_half_file(tmp_path, monkeypatch):
    """NumPy reports a full disk as "N requested and M written", without an errno (issue 16)."""
    import errno
    import shutil
    from collections import namedtuple

    enc = Encoder("resnet_mini", cifar_stem=False, proj_hidden_dim=32, proj_out_dim=16)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)

    def short_write(path, array):
        with open(path, "wb") as f:
            f.write(b"\x93NUMPY half")
        raise OSError("92160 requested and 1984 written")

    monkeypatch.setattr(np, "save", short_write)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: namedtuple("u", "total used free")(1, 1, 0))
    with pytest.raises(OSError) as e:
        probe.record(enc, images, {"size": 16}, tmp_path, 1, torch.device("cpu"))
    assert e.value.errno == errno.ENOSPC and e.value.strerror == "No space left on device"
    assert list((tmp_path / "probe").iterdir()) == []
