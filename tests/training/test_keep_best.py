"""--keep-best: best.pt holds the best monitor epoch, written atomically; a resume keeps comparing with it;
export, embed and evaluate read it with --checkpoint best.

The monitor is replaced by one that reports chosen values (and notes the weights it saw), so the best
epoch is known in advance and no kNN or probe pass is paid for.
"""

import errno
import json

import numpy as np
import pytest
import torch

from simclr_core.cli import embed as embed_cli
from simclr_core.cli import export as export_cli
from simclr_core.cli.train import train
from simclr_core.embeddings import checkpoint_key, checkpoint_meta
from simclr_core.errors import UserError
from simclr_core.runs import checkpoints
from simclr_core.runs.rundir import RunDir
from simclr_core.training import loop
from simclr_core.training.state import best_candidate, keep_best_direction

from tests.conftest import tiny_config
from tests.training.common import one_line_error, run_main

RANKME = {1: 3.0, 2: 5.0, 3: 4.0, 4: 4.5, 5: 6.0}  # epoch 2 is best of 3; a resume to 5 must keep it past epoch 4


@pytest.fixture
def monitored(monkeypatch):
    """A monitor that reports RANKME (and alignment, lower is better, best at epoch 1), and keeps each epoch's
    weights and the epoch best.pt held when that epoch's monitor ran."""
    weights: dict[int, dict[str, torch.Tensor]] = {}
    best_seen: dict[int, int | None] = {}

    def fake_monitor(s):
        weights[s.epoch] = {k: v.detach().clone() for k, v in s.method.state_dict().items()}
        best_seen[s.epoch] = checkpoints.load(s.run.best_ckpt)["epoch"] if s.run.best_ckpt.is_file() else None
        return {"rankme_h": RANKME[s.epoch], "alignment": float(s.epoch)}

    monkeypatch.setattr(loop, "monitor", fake_monitor)
    return weights, best_seen


def keep_best_run(tmp_path, signal="rankme_h", epochs=3):
    cfg = tiny_config(tmp_path)
    cfg.optim.epochs, cfg.run.keep_best = epochs, signal
    return train(cfg)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_best_pt_holds_the_best_epoch_with_its_record(tmp_path, monitored):
    weights, best_seen = monitored
    run = keep_best_run(tmp_path)
    best = checkpoints.load_training(run.best_ckpt)
    assert best["epoch"] == 2 and best["step"] == 4
    assert best["best"] == {"signal": "rankme_h", "value": 5.0, "epoch": 2, "step": 4}
    assert same(best["model"], weights[2]) and not same(best["model"], weights[3])
    assert "optimizer" not in best and "rng" not in best  # weights only: evaluate, embed and export read no more
    assert best_seen == {1: None, 2: 1, 3: 2}  # epoch 1 wrote it, epoch 2 replaced it, epoch 3 (4.0) did not
    info = json.loads(run.best_info_path.read_text())
    assert info == {**best["best"], "key": checkpoint_key(run.best_ckpt)}
    assert checkpoints.load_training(run.last_ckpt)["best"] == best["best"]  # what a resume carries
    assert "best.pt: epoch 2, rankme_h 5" in run.log_path.read_text()
    assert not [p.name for p in run.path.iterdir() if ".tmp" in p.name]


def test_a_lower_is_better_signal_keeps_the_lowest(tmp_path, monitored):
    run = keep_best_run(tmp_path, signal="alignment")  # 1.0, 2.0, 3.0: the first epoch stays best
    assert checkpoints.load_training(run.best_ckpt)["best"]["epoch"] == 1
    assert keep_best_direction("alignment") == -1 and keep_best_direction("knn_top1") == 1


def test_a_resumed_run_keeps_comparing_with_the_kept_best(tmp_path, monitored, capsys):
    _, best_seen = monitored
    run = keep_best_run(tmp_path)
    code, err = run_main(["--resume", "tiny", "--runs-dir", str(tmp_path / "runs"), "--epochs", "5"], capsys)
    assert code == 0, err
    # epoch 4 (4.5) is worse than epoch 2 (5.0): a resume that forgot the best would have written it
    assert best_seen[5] == 2
    assert checkpoints.load_training(run.best_ckpt)["best"] == {
        "signal": "rankme_h",
        "value": 6.0,
        "epoch": 5,
        "step": 10,
    }


def test_a_resume_with_another_signal_starts_best_afresh(tmp_path, monitored, capsys):
    _, best_seen = monitored
    run = keep_best_run(tmp_path)
    argv = ["--resume", "tiny", "--runs-dir", str(tmp_path / "runs"), "--epochs", "4", "--keep-best", "alignment"]
    code, err = run_main(argv, capsys)
    assert code == 0, err
    assert checkpoints.load_training(run.best_ckpt)["best"]["signal"] == "alignment"
    assert checkpoints.load_training(run.best_ckpt)["epoch"] == 4
    assert "best.pt holds the best epoch by rankme_h (epoch 2)" in run.log_path.read_text()


def test_a_failed_write_of_best_pt_keeps_the_old_one(tmp_path, monitored, monkeypatch, capsys):
    run = keep_best_run(tmp_path, epochs=1)  # best.pt: epoch 1 (3.0); epoch 2 (5.0) replaces it, or tries to
    before = run.best_ckpt.read_bytes()
    real_save = torch.save

    def full_disk_for_best(obj, f, *a, **kw):
        if ".best.pt." in getattr(f, "name", ""):  # the temp file beside best.pt
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(checkpoints.torch, "save", full_disk_for_best)
    code, err = run_main(["--resume", "tiny", "--runs-dir", str(tmp_path / "runs"), "--epochs", "2"], capsys)
    line = one_line_error(code, err)
    assert "cannot write best.pt of epoch 2" in line and "No space left on device" in line
    assert run.best_ckpt.read_bytes() == before  # the old best.pt whole, never half a file
    assert checkpoints.load_training(run.last_ckpt)["epoch"] == 1  # last.pt of epoch 2 was not written either
    assert checkpoints.load_training(run.last_ckpt)["best"]["epoch"] == 1  # and still names the best.pt on disk
    assert not [p.name for p in run.path.iterdir() if ".tmp" in p.name]


def test_export_and_embed_choose_best(tmp_path, monitored, capsys):
    weights, _ = monitored
    run = keep_best_run(tmp_path)
    runs = str(tmp_path / "runs")
    for which in ("best", "last"):
        assert (
            export_cli.main(["--run", "tiny", "--runs-dir", runs, "--format", "safetensors", "--checkpoint", which])
            == 0
        )
    from safetensors import safe_open

    with safe_open(str(run.export_dir / "tiny-best.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["epoch"]) == 2
        exported = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    trunk = {k.removeprefix("encoder.backbone."): v for k, v in weights[2].items() if k.startswith("encoder.backbone.")}
    assert same(exported, trunk)
    with safe_open(str(run.export_dir / "tiny.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["epoch"]) == 3

    out = {}
    for which in ("best", "last", str(run.best_ckpt)):
        path = tmp_path / f"{len(out)}.npz"
        argv = ["--run", "tiny", "--runs-dir", runs, "--split", "test", "--out", str(path), "--checkpoint", which]
        assert embed_cli.main(argv) == 0
        out[which] = np.load(path)["embeddings"]
    assert np.array_equal(out["best"], out[str(run.best_ckpt)]) and not np.allclose(out["best"], out["last"])
    assert checkpoint_meta(run, "best")["epoch"] == 2


def test_best_without_keep_best_is_one_line_naming_the_flag(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    cfg.optim.epochs, cfg.run.knn_every = 1, 0
    train(cfg)
    capsys.readouterr()
    argv = ["--run", "tiny", "--runs-dir", str(tmp_path / "runs"), "--format", "torchscript", "--checkpoint", "best"]
    line = one_line_error(export_cli.main(argv), capsys.readouterr().err)
    assert "has no best.pt" in line and "--keep-best" in line


def test_settings_that_cannot_keep_a_best(tmp_path, capsys):
    with pytest.raises(UserError, match="--knn-every 0 runs none"):
        cfg = tiny_config(tmp_path)
        cfg.run.keep_best, cfg.run.knn_every = "rankme_z", 0
        cfg.validate()
    with pytest.raises(UserError, match="drop --no-probe"):
        cfg = tiny_config(tmp_path)
        cfg.run.keep_best, cfg.run.probe = "lidar_h", False
        cfg.validate()
    cfg = tiny_config(tmp_path)
    cfg.run.keep_best, cfg.run.probe = "knn_top1", False  # the kNN monitor needs no probe
    cfg.validate()
    with pytest.raises(SystemExit):
        run_main(["--keep-best", "nonsense"], capsys)
    assert "--keep-best: invalid choice: 'nonsense'" in capsys.readouterr().err


def test_best_candidate_skips_epochs_without_the_signal():
    from types import SimpleNamespace

    from simclr_core.config import TrainConfig

    cfg = TrainConfig()
    cfg.run.keep_best = "areq_h"
    s = SimpleNamespace(cfg=cfg, best=None, epoch=3, step=30)
    assert best_candidate(s, {"loss": 1.0}) is None  # not a monitor epoch, or alpha-ReQ undefined (collapsed)
    assert best_candidate(s, {"areq_h": float("nan")}) is None
    assert best_candidate(s, {"areq_h": 1.5}) == {"signal": "areq_h", "value": 1.5, "epoch": 3, "step": 30}
    s.best = {"signal": "areq_h", "value": 1.2, "epoch": 2, "step": 20}
    assert best_candidate(s, {"areq_h": 1.5}) is None and best_candidate(s, {"areq_h": 1.2}) is None  # ties: earlier
    assert best_candidate(s, {"areq_h": 1.1})["value"] == 1.1


def test_keep_best_knn_top1_needs_labels(tmp_path, capsys):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    from PIL import Image

    for i in range(8):
        Image.fromarray(np.full((16, 16, 3), i * 30, np.uint8)).save(folder / f"{i}.png")
    argv = ["--dataset", "folder", "--data-path", str(folder), "--data-dir", str(tmp_path / "data")]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--name", "u"]
    line = one_line_error(*run_main([*argv, "--keep-best", "knn_top1", "--batch-size", "4", "--epochs", "1"], capsys))
    assert "needs labelled images" in line and "--keep-best rankme_h" in line
    assert RunDir(tmp_path / "runs" / "u").status()["state"] == "failed"
