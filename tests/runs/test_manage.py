"""simclr_core.runs.manage: archive (recoverable), restore, rename, notes, and which runs count as failed."""

import json
import os
import subprocess
import sys

import pytest

from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.runs import manage
from simclr_core.runs.rundir import RunDir, list_runs, new_run


def make_run(runs, name, state="finished", checkpoint=True) -> RunDir:
    run = new_run(runs, name)
    cfg = TrainConfig()
    cfg.run.name = name
    cfg.save(run.config_path)
    if state:
        run.write_status(state, "")
    if checkpoint:
        run.last_ckpt.write_bytes(b"weights")
    return run


def test_archive_moves_the_whole_run_and_restore_brings_it_back(tmp_path):
    run = make_run(tmp_path, "a")
    (run.path / "probe").mkdir()
    (run.path / "probe" / "frame.npy").write_bytes(b"x" * 10)
    dest = manage.archive(tmp_path, "a")
    assert dest == tmp_path / ".archive" / "a" and not run.path.exists()
    assert (dest / "last.pt").read_bytes() == b"weights" and (dest / "probe" / "frame.npy").exists()
    assert list_runs(tmp_path) == []  # gone from the list
    [a] = manage.list_archived(tmp_path)
    assert (a.folder, a.name) == ("a", "a") and a.archived > 0
    back = manage.restore(tmp_path, "a")
    assert back.path == run.path and (run.path / "last.pt").read_bytes() == b"weights"
    assert not (run.path / manage.ARCHIVED_JSON).exists() and manage.list_archived(tmp_path) == []


def test_archiving_the_same_name_twice_keeps_both(tmp_path):
    make_run(tmp_path, "a")
    manage.archive(tmp_path, "a")
    make_run(tmp_path, "a")
    second = manage.archive(tmp_path, "a")
    assert second.name.startswith("a-") and len(manage.list_archived(tmp_path)) == 2
    make_run(tmp_path, "a")
    with pytest.raises(UserError, match="a run named 'a' exists already"):
        manage.restore(tmp_path, "a")
    assert manage.restore(tmp_path, second.name, "a-old").name == "a-old"
    with pytest.raises(UserError, match="no archived run"):
        manage.restore(tmp_path, "../a")


def test_rename_moves_the_folder_and_keeps_the_list_order(tmp_path):
    old = make_run(tmp_path, "old")
    make_run(tmp_path, "newer")
    os.utime(old.config_path, (1, 1))  # the oldest
    manage.rename(tmp_path, "old", "renamed")
    assert not old.path.exists() and [r.name for r in list_runs(tmp_path)] == ["newer", "renamed"]
    assert json.loads((tmp_path / "renamed" / "config.json").read_text())["run"]["name"] == "renamed"
    with pytest.raises(UserError, match="exists already"):
        manage.rename(tmp_path, "renamed", "newer")
    for bad in ("../x", "a/b", ".hidden", "x\n", "", " x"):
        with pytest.raises(UserError, match="invalid run name"):
            manage.rename(tmp_path, "renamed", bad)
    with pytest.raises(UserError, match="no run named 'nope'"):
        manage.rename(tmp_path, "nope", "x")


def test_a_running_run_is_neither_renamed_nor_archived(tmp_path):
    run = make_run(tmp_path, "live", state=None)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run.path / "launch.json").write_text(json.dumps({"pid": proc.pid}))  # its training process lives
        with pytest.raises(UserError, match="'live' is running .* then rename it"):
            manage.rename(tmp_path, "live", "other")
        with pytest.raises(UserError, match="then archive it"):
            manage.archive(tmp_path, "live")
        assert run.path.exists() and not (tmp_path / "other").exists()
    finally:
        proc.kill()
        proc.wait()
    assert manage.rename(tmp_path, "live", "other").name == "other"  # ended: allowed


def test_a_run_a_background_job_works_on_is_not_archived(tmp_path, monkeypatch):
    from simclr_core.evaluation import run as evaluate
    from simclr_core.explorer import jobs

    monkeypatch.delenv("SIMCLR_JOBS", raising=False)
    monkeypatch.setattr(jobs, "ensure_worker", lambda directory: 0)  # no worker: the job stays queued
    run = make_run(tmp_path, "judged")
    make_run(tmp_path, "other")
    spec = evaluate.job_spec([run], baseline=False, k=20, probe_epochs=1, max_bank=None)
    jid = jobs.submit(jobs.jobs_dir(tmp_path), spec.kind, spec.to_dict())
    assert jobs.status(jobs.jobs_dir(tmp_path), jid)["state"] == "queued"
    with pytest.raises(UserError, match="'judged' is running \\(or being evaluated\\)"):
        manage.archive(tmp_path, "judged")
    assert manage.archive(tmp_path, "other").exists()  # a job on another run does not hold this one
    (jobs.jobs_dir(tmp_path) / f"{jid}.json").unlink()  # the job is gone: the run may go
    assert manage.archive(tmp_path, "judged").exists() and not run.path.exists()


def test_notes_are_saved_read_and_cleared(tmp_path):
    run = make_run(tmp_path, "a")
    assert manage.read_notes(run) == ""
    manage.write_notes(run, "lr 0.3 diverged\nnext: 0.1 ✓")
    assert manage.read_notes(run) == "lr 0.3 diverged\nnext: 0.1 ✓"
    manage.write_notes(run, "  \n")
    assert not (run.path / manage.NOTES).exists()
    with pytest.raises(UserError, match="limited to"):
        manage.write_notes(run, "x" * (manage.MAX_NOTES + 1))
    assert [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")] == []


def test_failed_states():
    assert all(manage.is_failed(s) for s in ("failed", "died", "damaged", "unknown"))
    assert not any(manage.is_failed(s) for s in ("running", "starting", "finished", "stopped"))
