"""Background jobs: one job per request, shared; failures recorded; a real worker process runs them."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from simclr_core.cli.train import train
from simclr_core.errors import UserError
from simclr_core.evaluation.run import job_spec
from simclr_core.explorer import compute as explore
from simclr_core.explorer import jobs, probe
from simclr_core.explorer.specs import MapSpec
from simclr_core.runs.rundir import RunDir

from tests.conftest import REPO, tiny_config


@pytest.fixture
def inline(monkeypatch):
    monkeypatch.setenv("SIMCLR_JOBS", "inline")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train(tiny_config(tmp_path_factory.mktemp("jobs"))).path


def test_the_same_request_is_one_job(tmp_path, inline, monkeypatch):
    calls = []
    monkeypatch.setitem(explore.KINDS, "echo", lambda spec, progress: calls.append(spec) or {"x": spec["x"]})
    a = jobs.submit(tmp_path, "echo", {"x": 1})
    assert jobs.status(tmp_path, a)["state"] == "done" and jobs.status(tmp_path, a)["result"] == {"x": 1}
    assert jobs.submit(tmp_path, "echo", {"x": 1}) == a and len(calls) == 1  # done: not run again
    b = jobs.submit(tmp_path, "echo", {"x": 2})
    assert b != a and len(calls) == 2


def test_a_failure_is_recorded_once_and_retried_on_request(tmp_path, inline, monkeypatch):
    calls = []

    def fail(spec, progress):
        calls.append(1)
        raise UserError("the split holds no images")

    monkeypatch.setitem(explore.KINDS, "fail", fail)
    jid = jobs.submit(tmp_path, "fail", {})
    job = jobs.status(tmp_path, jid)
    assert job["state"] == "failed" and job["message"] == "the split holds no images"
    jobs.submit(tmp_path, "fail", {})
    assert len(calls) == 1
    jobs.submit(tmp_path, "fail", {}, retry=True)
    assert len(calls) == 2

    monkeypatch.setitem(explore.KINDS, "bug", lambda spec, progress: 1 / 0)
    job = jobs.status(tmp_path, jobs.submit(tmp_path, "bug", {}))
    assert job["message"] == "ZeroDivisionError: division by zero" and "Traceback" in job["traceback"]


def test_retry_reruns_a_job_that_finished_with_errors_and_find_lists_a_kind_newest_first(tmp_path, inline, monkeypatch):
    calls = []
    monkeypatch.setitem(explore.KINDS, "parts", lambda spec, progress: calls.append(1) or {"errors": spec["errors"]})
    clean = jobs.submit(tmp_path, "parts", {"errors": []})
    partly = jobs.submit(tmp_path, "parts", {"errors": ["run b has no checkpoint"]})
    jobs.submit(tmp_path, "parts", {"errors": []}, retry=True)
    assert len(calls) == 2  # done without errors: the same request is not computed again
    jobs.submit(tmp_path, "parts", {"errors": ["run b has no checkpoint"]}, retry=True)
    assert len(calls) == 3
    found = jobs.find(tmp_path, "parts")
    assert [j["id"] for j in found] == [partly, clean]  # the re-run one was submitted last
    assert jobs.find(tmp_path, "map") == []


def test_a_new_stage_is_written_at_once(tmp_path, inline, monkeypatch):
    seen = []

    def two_stages(spec, progress):
        progress("embedding", 0, 2)
        progress("linear probe", 1, 2)  # milliseconds later: still written, or the page shows "embedding"
        seen.append(json.loads(next(tmp_path.glob("*.json")).read_text())["stage"])
        return {}

    monkeypatch.setitem(explore.KINDS, "stages", two_stages)
    jobs.submit(tmp_path, "stages", {})
    assert seen == ["linear probe"]


def test_an_evaluate_job_saves_each_result_and_records_a_failing_run(trained, tmp_path, inline):
    good = RunDir(shutil.copytree(trained, tmp_path / "good"))
    broken = RunDir(shutil.copytree(trained, tmp_path / "broken"))
    broken.last_ckpt.unlink()
    spec = job_spec([broken, good], baseline=False, k=20, probe_epochs=5, max_bank=200)
    d = jobs.jobs_dir(tmp_path)
    job = jobs.status(d, jobs.submit(d, spec.kind, spec.to_dict()))
    assert job["state"] == "done" and (job["done"], job["total"]) == (2, 2)
    [error] = job["result"]["errors"]  # the broken run did not stop the good one
    assert error["model"] == "broken" and "no checkpoint" in error["message"]
    [done] = job["result"]["evaluated"]
    [saved] = good.eval_results()
    assert done["model"] == "good" and done["knn_top1"] == saved["knn_top1"] and saved["n_bank"] == 200
    assert saved["k"] == 20 and "probe_top1" in saved and broken.eval_results() == []


def test_a_new_request_in_a_slot_cancels_its_waiting_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "ensure_worker", lambda d: 0)  # nobody runs them: they wait
    a = jobs.submit(tmp_path, "map", {"n": 1}, slot="map:s1")
    other = jobs.submit(tmp_path, "map", {"n": 9}, slot="map:s2")
    b = jobs.submit(tmp_path, "map", {"n": 2}, slot="map:s1")
    assert jobs.status(tmp_path, a)["state"] == "cancelled"
    assert jobs.status(tmp_path, b)["state"] == jobs.status(tmp_path, other)["state"] == "queued"


def test_a_job_whose_worker_died_reads_as_failed(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"state": "running", "pid": 2**22 + 12345}))
    job = jobs.status(tmp_path, "x")
    assert job["state"] == "failed" and "worker stopped" in job["message"]
    assert jobs.status(tmp_path, "nope")["state"] == "missing"
    (tmp_path / "bad.json").write_text("[1, 2")
    assert jobs.status(tmp_path, "bad")["state"] == "missing"


@pytest.mark.slow
def test_a_real_worker_process_runs_queued_jobs(trained, tmp_path, monkeypatch):
    run = RunDir(shutil.copytree(trained, tmp_path / "tiny"))
    d = tmp_path / ".jobs"
    monkeypatch.setenv("SIMCLR_UMAP_WARM_UP", "0")
    spec = MapSpec(run=str(run.path), split="test", feature="h", method="pca", dims=2)
    jid = jobs.submit(d, spec.kind, spec.to_dict())
    pid = json.loads((d / "worker.json").read_text())["pid"]
    deadline = time.time() + 180
    while jobs.status(d, jid)["state"] in jobs.ACTIVE and time.time() < deadline:
        time.sleep(0.5)
    job = jobs.status(d, jid)
    assert job["state"] == "done", job
    assert os.path.isfile(job["result"]["coords"])
    assert jobs.ensure_worker(d) == pid  # alive: reused, not started twice
    os.kill(pid, 15)


@pytest.mark.slow
def test_a_worker_whose_app_is_gone_exits_when_idle(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "simclr_core.explorer.jobs",
        "--dir",
        str(tmp_path),
        "--no-warm-up",
        "--idle-exit",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    gone = subprocess.Popen(cmd, cwd=REPO, env=env)  # no --parent: nobody to wait for
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    kept = subprocess.Popen(cmd + ["--parent", str(parent.pid)], cwd=REPO, env=env)
    try:
        assert gone.wait(timeout=60) == 0
        time.sleep(1)
        assert kept.poll() is None  # its app lives: it stays, warm, for the next job
        parent.kill()
        parent.wait()
        assert kept.wait(timeout=60) == 0
    finally:
        for p in (gone, parent, kept):
            p.kill()


@pytest.fixture
def slow_job(tmp_path, monkeypatch):
    """A jobs folder holding one queued job that computes for minutes: a t-SNE of 20,000 probe rows."""
    run, n = tmp_path / "run", 20_000
    probe.write_subset(run, probe.Probe("test", np.arange(n), np.zeros(n, np.int64), ["a"]))
    np.save(probe.frame_path(run, 1), np.random.default_rng(0).standard_normal((n, 32)).astype(np.float16))
    monkeypatch.setattr(jobs, "ensure_worker", lambda d: 0)  # the test starts the worker
    d = tmp_path / ".jobs"
    spec = {"run": str(run), "method": "tsne", "dims": 2, "params": {}, "thumbs": None}
    return d, jobs.submit(d, "trajectory", spec)


def computing_worker(d, jid, *args, **popen):
    """A real worker process of ``d``, returned once it is inside the job's t-SNE."""
    cmd = [sys.executable, "-m", "simclr_core.explorer.jobs", "--dir", str(d), "--no-warm-up", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, **popen)
    deadline = time.time() + 120
    while "projecting" not in jobs.status(d, jid).get("stage", ""):
        assert proc.poll() is None and time.time() < deadline, jobs.status(d, jid)
        time.sleep(0.1)
    time.sleep(1)  # in sklearn's compiled code by now
    return proc


@pytest.mark.slow
def test_a_worker_stops_within_a_second_of_its_apps_death_even_mid_job(slow_job):
    d, jid = slow_job
    app = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    worker = computing_worker(d, jid, "--parent", str(app.pid))
    try:
        app.kill()
        app.wait()
        assert worker.wait(timeout=3) == 0  # not minutes later, when the t-SNE is done
        # left as a killed worker leaves it: the page says "try again", the next worker runs it again
        assert json.loads((d / f"{jid}.json").read_text())["state"] == "running"
        assert jobs.status(d, jid)["state"] == "failed" and "worker stopped" in jobs.status(d, jid)["message"]
        assert jobs._requeue_orphans(d) == 1 and jobs.status(d, jid)["state"] == "queued"
    finally:
        for p in (worker, app):
            p.kill()
            p.wait()


def sigterm_ignored_and_blocked():
    """What a launcher can pass on through exec: SIGTERM ignored (nohup-like wrappers) and blocked (a thread's mask)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


@pytest.mark.slow
def test_sigterm_ends_a_computing_worker_at_once(slow_job):
    d, jid = slow_job
    worker = computing_worker(d, jid, "--parent", str(os.getpid()), preexec_fn=sigterm_ignored_and_blocked)
    try:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=3) == -signal.SIGTERM  # its default action: no handler delayed it
        assert jobs.status(d, jid)["state"] == "failed"  # and a next worker re-runs it, as above
    finally:
        worker.kill()
        worker.wait()
