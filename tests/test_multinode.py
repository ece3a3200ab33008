"""Many machines, and a rank that dies: two torchrun launchers on this machine, one per "node" (gloo).

Each launcher is what one machine of a multi-node job runs (``torchrun --nnodes 2 --rdzv-backend c10d
--rdzv-endpoint HOST:PORT``); the ranks meet at the rendezvous, as they would across machines.
``python -m tests.test_multinode OUT`` is the gather check of tests/test_distributed.py as a torchrun worker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from simclr_core import distributed
from simclr_core.errors import UserError
from simclr_core.runs import checkpoints

from tests.conftest import REPO, tiny_args, tiny_config
from tests.test_distributed import assert_equals_one_process, free_port, gather_check


def launch_nodes(
    tmp_path: Path, args: list[str], tag: str, env: dict | None = None, per_node: list[list[str]] | None = None
) -> list[subprocess.Popen]:
    """Two torchrun launchers of a 2-node job (one process each, ``per_node[N]`` added to node N's ``args``),
    their output in ``tmp_path/<tag>-node<N>.log``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{free_port()}",
        "--max-restarts=0",  # a lost rank ends the job; the user resumes it
    ]
    return [
        subprocess.Popen(
            [*cmd, *args, *(per_node[n] if per_node else [])],
            cwd=tmp_path,
            env=env,
            stdout=(tmp_path / f"{tag}-node{n}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for n in range(2)
    ]


def launch_one_node(tmp_path: Path, args: list[str], tag: str) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node 2``: the same job on one node, its output in ``<tag>-node0.log``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    log = (tmp_path / f"{tag}-node0.log").open("w")
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[int]:
    """Each launcher's exit status, once both have ended (killed after ``timeout`` s: a hang fails the test)."""
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(deadline - time.monotonic(), 0.1)) for p in procs]
    finally:
        for p in procs:
            p.kill()


def output(tmp_path: Path, tag: str, node: int) -> str:
    return (tmp_path / f"{tag}-node{node}.log").read_text()


def ranks(procs: list[subprocess.Popen], timeout: float = 120) -> dict[int, tuple[int, int]]:
    """{rank: (worker pid, launcher index)} of a running job, read from the workers' environment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                node = next((i for i, p in enumerate(procs) if p.pid == ppid), None)
                if node is not None:
                    env = (stat.parent / "environ").read_bytes().split(b"\0")
                    rank = next(int(kv[5:]) for kv in env if kv.startswith(b"RANK="))
                    found[rank] = (int(stat.parent.name), node)
            except (OSError, ValueError, IndexError, StopIteration):  # a process that ended meanwhile
                continue
        if len(found) == 2:
            return found
        time.sleep(0.1)
    raise AssertionError("the two workers did not start")


def ended(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its launcher counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def last_step(run: Path) -> int:
    """The newest step in metrics.jsonl (rank 0 writes a line each step here), 0 before the first."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return max([json.loads(line)["step"] for line in lines if line.endswith("}")], default=0)


def losses(run: Path) -> list[tuple[str, int, float]]:
    return [
        (m["kind"], m["step"], m["loss"]) for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    ]


@pytest.mark.slow
def test_two_nodes_train_checkpoint_resume_and_equal_one_node(tmp_path):
    # Three jobs at once (to save time): the gather check on two nodes, and a tiny run on one node's two
    # processes and on two nodes.
    out, runs = tmp_path / "gather.pt", tmp_path / "runs"
    gather = launch_nodes(tmp_path, ["-m", "tests.test_multinode", str(out)], "gather")
    one = launch_one_node(tmp_path, ["-m", "simclr_core.train", *tiny_args(tmp_path, "one"), "--device", "cpu"], "one")
    two = launch_nodes(tmp_path, ["-m", "simclr_core.train", *tiny_args(tmp_path, "two"), "--device", "cpu"], "two")
    assert finish([*gather, one, *two]) == [0] * 5, (
        output(tmp_path, "two", 0)[-3000:] + output(tmp_path, "two", 1)[-3000:]
    )

    # The negatives cross the nodes: SimCLR's loss and every gradient on two "nodes" with half batches
    # equal one process with the whole batch (which holds only when they are gathered with gradient).
    assert_equals_one_process(torch.load(out, weights_only=True))

    # Two nodes give one node's numbers: the loss curve, and the weights.
    a, b = losses(runs / "one"), losses(runs / "two")
    assert [(k, s) for k, s, _ in a] == [(k, s) for k, s, _ in b] and len(a) == 6  # 4 steps, 2 epochs
    assert [x for *_, x in b] == pytest.approx([x for *_, x in a], abs=1e-5)
    wa, wb = (checkpoints.load(runs / name / "last.pt") for name in ("one", "two"))
    assert wb["step"] == 4 and len(wb["view_generators"]) == 2
    for key in wa["model"]:
        assert torch.allclose(wa["model"][key].float(), wb["model"][key].float(), atol=1e-5), key

    # The 2-node run resumes from its checkpoint on two nodes, until SIGTERM reaches both launchers (as SLURM's
    # --signal does before the time limit): every rank stops at one step, after a checkpoint.
    resume = ["-m", "simclr_core.train", "--resume", "two", "--runs-dir", str(runs), "--epochs", "1000"]
    more = launch_nodes(tmp_path, resume, "more")
    try:
        ranks(more)
        deadline = time.monotonic() + 120
        while last_step(runs / "two") < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        for p in more:
            p.send_signal(signal.SIGTERM)
        finish(more, timeout=120)
    finally:
        for p in more:
            p.kill()
    status = json.loads((runs / "two" / "status.json").read_text())
    assert status["state"] == "stopped" and status["message"].startswith("stopped by SIGTERM"), status
    assert checkpoints.load(runs / "two" / "last.pt")["step"] == status["step"] >= 6
    log = (runs / "two" / "train.log").read_text()
    assert "resuming simclr run two at epoch 2, step 4 of 2000 on CPU (1 threads) x 2 processes" in log


@pytest.mark.slow
def test_a_lost_rank_fails_the_run_in_one_line_and_a_resume_continues(tmp_path):
    runs, run = tmp_path / "runs", tmp_path / "runs" / "tiny"
    spe = 16  # steps per epoch: 512 images, batch 32, so a kill two steps into an epoch lands inside it
    first = tiny_args(tmp_path) + ["--subset", "512", "--knn-every", "0", "--device", "cpu", "--epochs", "1000"]
    again = ["--resume", "tiny", "--runs-dir", str(runs)]

    def lose(tag: str, args: list[str], victim: int, sig: signal.Signals, env: dict | None = None) -> tuple[str, float]:
        """Start the job, send ``sig`` to rank ``victim`` two steps into an epoch; the survivor's error line, and
        how long after the signal the survivor's process ended."""
        procs = launch_nodes(tmp_path, ["-m", "simclr_core.train", *args], tag, env=env)
        try:
            workers = ranks(procs)
            target = (last_step(run) // spe + 1) * spe + 2  # the resumed run starts below the last failure
            deadline = time.monotonic() + 120
            while last_step(run) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(workers[victim][0], sig)
            t0 = time.monotonic()
            survivor, node = workers[1 - victim]
            while not ended(survivor) and time.monotonic() - t0 < 120:
                time.sleep(0.01)
            took = time.monotonic() - t0
            if sig == signal.SIGSTOP:  # the silent machine goes away for good
                os.kill(workers[victim][0], signal.SIGKILL)
            assert all(rc != 0 for rc in finish(procs, timeout=120))
        finally:
            for p in procs:
                p.kill()
        out = output(tmp_path, tag, node)
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"[rank{1 - victim}]: Traceback" not in out, out[-3000:]
        msg = errors[0].removeprefix("error: ")
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "failed" and status["message"] == msg
        at = re.fullmatch(
            rf"rank {victim} was lost at epoch (\d+), step (\d+) \(its process ended, or its machine or network went "
            rf"silent for \d+ s; its own output says why\); kept the last checkpoint \(epoch (\d+), step (\d+)\); "
            "resume with --resume tiny",
            msg,
        )
        assert at, msg
        epoch, step, kept_epoch, kept_step = map(int, at.groups())
        ckpt = checkpoints.load(run / "last.pt")
        assert (kept_epoch, kept_step) == (ckpt["epoch"], ckpt["step"]) == (epoch - 1, (epoch - 1) * spe)
        assert kept_step < step < kept_step + spe  # mid-epoch
        return msg, took

    def resumed_at(tag: str) -> str:
        return next(
            line
            for line in output(tmp_path, tag, 0).splitlines() + output(tmp_path, tag, 1).splitlines()
            if line.startswith("resuming")
        )

    # Rank 1's process is killed: rank 0 fails at once, says so in one line, and status.json has it.
    msg, took = lose("kill1", first, victim=1, sig=signal.SIGKILL)
    assert msg.startswith("rank 1 was lost at epoch 2, step ") and "(epoch 1, step 16)" in msg
    assert took < 30, took  # the connection closes with the process: no timeout to wait for
    print(f"survivor (rank 0) ended {took:.2f} s after rank 1's SIGKILL")

    # Rank 0, the writer, is killed: rank 1 records the failure in its place; the resume began at the checkpoint.
    msg, took = lose("kill0", again, victim=0, sig=signal.SIGKILL)
    assert took < 30, took
    assert "resuming simclr run tiny at epoch 1, step 16 of" in resumed_at("kill0")
    print(f"survivor (rank 1) ended {took:.2f} s after rank 0's SIGKILL")

    # Rank 1 goes silent (SIGSTOP: no reset, as when a machine goes away): rank 0 gives up after the timeout.
    kept = re.search(r"checkpoint \((epoch \d+, step \d+)\)", msg).group(1)
    msg, took = lose("stop1", again, victim=1, sig=signal.SIGSTOP, env={distributed.TIMEOUT_ENV: "8"})
    assert "went silent for 8 s" in msg and 8 <= took < 60, (msg, took)
    assert f"resuming simclr run tiny at {kept} of" in resumed_at("stop1")
    print(f"survivor (rank 0) ended {took:.2f} s after rank 1's SIGSTOP (timeout 8 s)")


@pytest.mark.slow
def test_a_runs_folder_that_the_nodes_do_not_share_is_named(tmp_path):
    # Each "node" names its own runs folder, as two machines that each keep a local ./checkpoints would.
    args = ["-m", "simclr_core.train", *tiny_args(tmp_path), "--device", "cpu"]
    apart = [["--runs-dir", str(tmp_path / f"local{n}")] for n in range(2)]
    assert all(rc != 0 for rc in finish(launch_nodes(tmp_path, args, "apart", per_node=apart), timeout=120))
    made = list(tmp_path.glob("local*/tiny/status.json"))
    assert len(made) == 1  # rank 0's; rank 1 found nothing in its own folder
    status = json.loads(made[0].read_text())
    assert status["state"] == "failed"
    assert re.fullmatch(
        r"rank 1 on \S+ does not see the run folder that rank 0 made: no run named 'tiny' \(.*local\d holds no runs "
        r"yet\); put --runs-dir on a filesystem that every machine shares",
        status["message"],
    ), status["message"]
    for n in range(2):  # both ranks end with that line, not a lost rank
        assert f"error: {status['message']}" in output(tmp_path, "apart", n)


def test_peer_lost_knows_gloo_and_nccl_failures_from_other_errors(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    lost = [
        RuntimeError(
            "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer [1.2.3.4]:5"
        ),
        RuntimeError(
            "[../third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [::1]:9: Connection reset by peer"
        ),
        RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:129] Timed out waiting 3000ms"),
        RuntimeError("Application timeout caused pair closure"),
        dist.DistBackendError("NCCL communicator was aborted on rank 0"),
    ]
    assert all(distributed.peer_lost(e) for e in lost)
    others = [RuntimeError("DataLoader timed out after 5 seconds"), ValueError("Connection reset by peer"), KeyError()]
    assert not any(distributed.peer_lost(e) for e in others)
    monkeypatch.setattr(distributed, "world_size", lambda: 1)
    assert not distributed.peer_lost(lost[0])  # one process has no peer to lose


def test_the_collective_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.collective_timeout().total_seconds() == 600
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "7.5")
    assert distributed.collective_timeout().total_seconds() == 7.5
    for bad in ("ten", "0", "-3", "nan"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(UserError, match="SIMCLR_DIST_TIMEOUT=.* must be a number of seconds above 0"):
            distributed.collective_timeout()


def test_a_laptop_watching_the_shared_runs_folder_follows_a_cluster_run_by_its_status(tmp_path):
    from simclr_core.runs import manage
    from simclr_core.runs.rundir import REMOTE_STALE_S, new_run

    run = new_run(tmp_path, "far")
    tiny_config(tmp_path, "far").save(run.config_path)
    run.write_status("running", epoch=1, step=5)
    here = json.loads(run.status_path.read_text())
    assert here["host"] == socket.gethostname()
    assert run.status()["state"] == "died"  # written on this machine, and no process holds its lock

    # Written by a cluster node, whose lock this machine cannot see: running while the status is fresh.
    run.status_path.write_text(json.dumps({**here, "host": "gpu-node-07", "updated": time.time() - 60}))
    assert run.status()["state"] == "running"
    with pytest.raises(UserError, match="is running"):  # so the app does not rename it under the cluster's feet
        manage.rename(tmp_path, "far", "near")
    stale = time.time() - REMOTE_STALE_S - 3600
    run.status_path.write_text(json.dumps({**here, "host": "gpu-node-07", "updated": stale}))
    st = run.status()
    assert st["state"] == "died" and st["message"].startswith("no word from gpu-node-07 for 90 min")


@pytest.mark.slow
def test_a_cluster_run_that_died_without_a_word_resumes_at_once(tmp_path):
    from simclr_core.cli.train import main

    assert main([*tiny_args(tmp_path), "--device", "cpu", "--epochs", "1", "--knn-every", "0"]) == 0
    run = tmp_path / "runs" / "tiny"
    st = json.loads((run / "status.json").read_text())
    # Its rank 0 on a node that went away: the status still says running, fresh, from another host.
    (run / "status.json").write_text(
        json.dumps({**st, "state": "running", "host": "gpu-node-07", "updated": time.time()})
    )
    assert main(["--resume", "tiny", "--runs-dir", str(tmp_path / "runs"), "--epochs", "2"]) == 0  # no lock: go
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


if __name__ == "__main__":  # a torchrun worker: the gather check, across whatever nodes torchrun joined
    dist.init_process_group("gloo")
    try:
        gather_check(dist.get_rank(), dist.get_world_size(), sys.argv[1])
    finally:
        dist.destroy_process_group()
