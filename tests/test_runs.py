import json
import os

import pytest

from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.runs import RunDir, list_runs, new_run, open_run, summarize


def test_new_run_refuses_existing_and_open_lists_known(tmp_path):
    run = new_run(tmp_path, "a")
    TrainConfig().save(run.config_path)
    with pytest.raises(UserError, match="already exists.*--resume a"):
        new_run(tmp_path, "a")
    with pytest.raises(UserError, match="no run named 'b' .*: a"):
        open_run(tmp_path, "b")
    assert [r.name for r in list_runs(tmp_path)] == ["a"]
    assert list_runs(tmp_path / "nowhere") == []


def test_new_run_takes_a_launcher_folder_and_replaces_a_failed_start(tmp_path):
    (tmp_path / "l").mkdir()
    (tmp_path / "l" / "console.log").write_text("launcher output")
    assert new_run(tmp_path, "l").path == tmp_path / "l"
    assert (tmp_path / "l" / "console.log").exists()  # kept
    run = new_run(tmp_path, "f")
    TrainConfig().save(run.config_path)
    run.write_status("failed", "no images found in /nowhere")
    run = new_run(tmp_path, "f")  # nothing to lose: no checkpoint
    assert not run.config_path.exists() and run.status() == {}
    TrainConfig().save(run.config_path)
    run.write_status("failed", "loss became nan")
    run.last_ckpt.write_bytes(b"weights")
    with pytest.raises(UserError, match="already exists"):
        new_run(tmp_path, "f")


def test_metrics_follow_and_survive_a_half_line(tmp_path):
    run = RunDir(tmp_path)
    run.append_metrics({"epoch": 1, "step": 5, "loss": 2.0})
    run.append_metrics({"epoch": 1, "step": 10, "loss": 1.5, "knn_top1": 40.0})
    with open(run.metrics_path, "a") as f:
        f.write('{"epoch": 2, "st')  # a writer caught mid-line
    assert [m["step"] for m in run.metrics()] == [5, 10]
    run.truncate_metrics(5)
    assert [m["step"] for m in run.metrics()] == [5]


def test_status_and_dead_process(tmp_path):
    run = RunDir(tmp_path)
    assert run.status() == {}
    run.write_status("running", epoch=1)
    assert run.status()["state"] == "running" and run.status()["pid"] == os.getpid()
    st = json.loads(run.status_path.read_text())
    st["pid"] = 2**22 + 12345  # no such process
    run.status_path.write_text(json.dumps(st))
    assert run.status()["state"] == "died"


def test_summary(tmp_path):
    run = new_run(tmp_path, "s")
    TrainConfig().save(run.config_path)
    run.append_metrics({"epoch": 1, "step": 1, "loss": 3.0, "knn_top1": 20.0})
    run.append_metrics({"epoch": 2, "step": 2, "loss": 2.5, "knn_top1": 30.0})
    run.write_status("stopped", "by STOP file", epoch=2)
    s = summarize(run)
    assert (s.state, s.epoch, s.epochs, s.last_loss, s.best_knn) == ("stopped", 2, 100, 2.5, 30.0)


def test_stop_file(tmp_path):
    run = RunDir(tmp_path)
    assert not run.stop_requested()
    run.request_stop()
    assert run.stop_requested()
    run.clear_stop()
    assert not run.stop_requested()
