import json
import os
import subprocess
import sys

import pytest

from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.runs.progress import curves, eta, summarize
from simclr_core.runs.rundir import RunDir, list_runs, new_run, open_run, process_start

from tests.conftest import REPO


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
    with run.writer("training"):
        run.write_status("running", epoch=1)
        assert run.status()["state"] == "running" and run.status()["pid"] == os.getpid()
    # the writer is gone; its pid (this very process, as a reused pid would be) is alive, yet the run is not
    assert run.status()["state"] == "died"
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


def test_a_second_writer_is_refused_and_told_who_writes(tmp_path):
    run = RunDir(tmp_path / "r")
    with run.writer("training"):
        assert run.writer_alive()
        with (
            pytest.raises(
                UserError,
                match=rf"run 'r' is being written by another process \(pid {os.getpid()}, "
                r"training since \d\d:\d\d:\d\d\)",
            ),
            run.writer("training"),
        ):
            pass
    assert not run.writer_alive()
    with run.writer("training"):  # free again once the first is done
        pass


def test_a_killed_writer_frees_the_run_and_its_temps_are_removed(tmp_path):
    """kill -9 leaves the lock file and temp files behind; the kernel drops the lock, and the next writer
    removes the temps of writers that are gone (and not those of live ones)."""
    run = RunDir(tmp_path / "r")
    code = (
        "import sys, time; from simclr_core.runs.rundir import RunDir; r = RunDir(sys.argv[1])\n"
        "with r.writer('training'):\n"
        "    r.write_status('running', epoch=3)\n"
        "    print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run.path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.readline().strip() == "held"
    assert run.status()["state"] == "running"
    with pytest.raises(UserError, match=f"pid {proc.pid}"), run.writer("training"):
        pass
    (run.path / "probe").mkdir()
    dead = [
        run.path / f".last.pt.{proc.pid}.tmp",
        run.path / "probe" / f".epoch-0003.{proc.pid}.tmp.npy",
        run.path / f".status.json.{proc.pid}.tmp",
    ]
    alive = [run.path / f".last.pt.{os.getpid()}.tmp", run.path / "last.pt"]
    for p in dead + alive:
        p.write_bytes(b"x" * 1000)
    proc.kill()
    proc.wait()
    st = run.status()
    assert st["state"] == "died" and st["epoch"] == 3
    with run.writer("training"):
        assert [p.exists() for p in dead] == [False] * 3 and all(p.exists() for p in alive)


def test_a_reused_pid_is_not_a_live_run(tmp_path):
    """status.json and launch.json name a pid that a later process now has (here: this test's own)."""
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.status_path.write_text(json.dumps({"state": "running", "pid": os.getpid(), "epoch": 2}))
    assert run.status()["state"] == "died"  # no process holds the writer lock
    ticks = process_start(os.getpid())
    assert isinstance(ticks, int)
    (run.path / "launch.json").write_text(json.dumps({"pid": os.getpid(), "start_ticks": ticks + 1}))
    assert not run.launcher_alive()
    (run.path / "launch.json").write_text(json.dumps({"pid": os.getpid(), "start_ticks": ticks}))
    assert run.launcher_alive()


@pytest.mark.parametrize(
    "content",
    [
        b"[]",
        b"null",
        b'"running"',
        b"42",
        b'{"state": ["x"]}',
        b"\xff\xfe{",
        b'{"state": "finished", "pid": "abc", "epoch": "two", "updated": "now", "message": ["a"]}',
    ],
)
def test_a_damaged_status_is_a_message_on_that_run_alone(tmp_path, content):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    TrainConfig().save(run.config_path)
    run.status_path.write_bytes(content)
    st = run.status()
    summary = summarize(run)  # what the sidebar and the run table show: never an exception
    if content.startswith(b'{"state": "finished"'):
        assert st["state"] == "finished" and "epoch" not in st and summary.epoch == 0 and summary.message == "['a']"
    else:
        assert st["state"] == summary.state == "damaged" and "status.json is damaged" in st["message"]


def test_damaged_metric_lines_are_skipped(tmp_path):
    run = RunDir(tmp_path)
    run.metrics_path.write_bytes(
        b'42\nnull\n{"epoch": 1}\n\xff\xfe\n{"step": true}\n'
        b'{"step": 5, "loss": "abc", "lr": 0.1, "collapse": "collapsed"}\n'
        b'{"step": 6, "loss": 1.5}\n'
    )
    assert run.metrics() == [
        {"step": 5, "lr": 0.1, "collapse": "collapsed", "kind": "step"},
        {"step": 6, "loss": 1.5, "kind": "step"},
    ]
    assert summarize(run).last_loss == 1.5
    run.truncate_metrics(5)
    assert [m["step"] for m in run.metrics()] == [5]


def test_eval_results_survive_a_damaged_file_and_concurrent_writers(tmp_path):
    run = RunDir(tmp_path)
    run.eval_path.write_text('{"not": "a list"}')
    assert run.eval_results() == []
    run.add_eval_result({"knn_top1": 1.0})
    code = (
        "import sys; from simclr_core.runs.rundir import RunDir; r = RunDir(sys.argv[1])\n"
        "for i in range(40): r.add_eval_result({'who': sys.argv[2], 'i': i})"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path), who], env={**os.environ, "PYTHONPATH": str(REPO)})
        for who in "ab"
    ]
    assert [p.wait() for p in procs] == [0, 0]
    results = run.eval_results()
    assert len(results) == 81 and sum(r.get("who") == "a" for r in results) == 40  # no result lost


def test_curves_sort_metric_lines_into_the_plotted_series():
    step1, step2 = {"epoch": 1, "step": 1, "loss": 5.0, "lr": 0.1}, {"epoch": 1, "step": 2, "loss": 4.0, "lr": 0.2}
    end = {"epoch": 1, "step": 2, "loss": 4.5, "epoch_loss": 4.5, "lr": 0.2, "knn_top1": 30.0, "rankme_h": 7.5}
    c = curves([step1, step2, end])
    assert c.steps == [step1, step2]  # the epoch line repeats its last step: not plotted twice
    assert c.knn == [end] and c.health == [end]
    assert curves([end]).steps == [end]  # a run that logged only epoch lines still has a loss curve
    assert curves([]).steps == curves([]).knn == curves([]).health == []


def test_eta_is_the_remaining_steps_at_the_current_speed():
    status = {"state": "running", "step": 10, "total_steps": 110, "images_per_s": 64.0}
    assert eta(status, batch_size=32) == 100 * 32 / 64.0
    assert eta({**status, "state": "stopped"}, 32) is None  # nothing left to wait for
    assert eta({**status, "images_per_s": None}, 32) is None  # no speed measured yet


def test_write_status_on_a_full_disk_rewrites_in_place(tmp_path, monkeypatch):
    """No room for a temp file and no reserve left: the status goes over the old one, in its own blocks."""
    import errno

    from simclr_core.runs import rundir as runs

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_status("running", epoch=1)

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "write_json_atomic", full)
    run.write_status("failed", "the disk is full; free space, then resume")
    monkeypatch.undo()
    st = json.loads(run.status_path.read_text())
    assert (st["state"], st["message"], st["epoch"]) == ("failed", "the disk is full; free space, then resume", 1)
    run.status_path.unlink()  # nothing to rewrite and nowhere to write: the caller hears of it
    monkeypatch.setattr(runs, "write_json_atomic", full)
    with pytest.raises(OSError):
        run.write_status("failed", "x")


def test_the_status_reserve_is_given_back_for_the_last_status(tmp_path, monkeypatch):
    from simclr_core.runs import rundir as runs

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.reserve_status_space()
    assert run.status_reserve_path.stat().st_size == runs.STATUS_RESERVE
    real = runs.write_json_atomic

    def full_while_reserved(path, obj):
        if run.status_reserve_path.exists():
            raise OSError(28, "No space left on device")
        real(path, obj)

    monkeypatch.setattr(runs, "write_json_atomic", full_while_reserved)
    run.write_status("failed", "out of space")
    assert not run.status_reserve_path.exists() and run.status()["state"] == "failed"
    run.release_status_space()  # twice is fine


def test_a_stop_folder_is_not_removed(tmp_path):
    run = RunDir(tmp_path / "r")
    run.stop_path.mkdir(parents=True)
    with pytest.raises(UserError, match=r"STOP is a folder, where a STOP file asks the run to stop; move it out"):
        run.clear_stop()
    assert run.stop_path.is_dir()


def test_checkpoint_file_and_best_json(tmp_path):
    from simclr_core.runs.rundir import best_record

    run = new_run(tmp_path, "b")
    with pytest.raises(UserError, match="has no checkpoint last.pt yet"):
        run.checkpoint_file("last")
    with pytest.raises(UserError, match="has no best.pt: .* --keep-best SIGNAL"):
        run.checkpoint_file("best")
    run.last_ckpt.write_bytes(b"x")
    run.best_ckpt.write_bytes(b"y")
    other = tmp_path / "elsewhere.pt"
    other.write_bytes(b"z")
    assert [run.checkpoint_file(w) for w in ("last", "best", other)] == [run.last_ckpt, run.best_ckpt, other]
    record = {"signal": "rankme_h", "value": 5, "epoch": 2, "step": 4}
    run.write_best_info(record, key="k1")
    assert run.best_info("k1") == {**record, "value": 5.0} and run.best_info("k2") is None  # another best.pt
    run.best_info_path.write_text("{broken")
    assert run.best_info("k1") is None
    for bad in (None, [], {**record, "epoch": -1}, {**record, "value": "5"}, {**record, "step": True}):
        assert best_record(bad) is None


def test_a_failed_start_takes_no_stale_best_pt_into_the_new_run(tmp_path):
    run = new_run(tmp_path, "f")
    TrainConfig().save(run.config_path)
    run.write_status("failed", "killed between best.pt and last.pt of epoch 1")
    run.best_ckpt.write_bytes(b"old")
    run.write_best_info({"signal": "rankme_h", "value": 1.0, "epoch": 1, "step": 2}, key="k")
    run = new_run(tmp_path, "f")
    assert not run.best_ckpt.exists() and not run.best_info_path.exists()
