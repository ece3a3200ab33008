"""Data parallelism on the CPU: gloo, two real processes.

The central check is the one the issue names: the NT-Xent loss and the gradients of a 2-rank
run with batch B/2 per rank equal those of one process with batch B, which holds only when the
negatives are gathered with gradient (a plain all_gather is shown to break it).
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from simclr_core import distributed
from simclr_core.methods import MoCoV2, SimCLR
from simclr_core.runs import checkpoints

from tests.conftest import REPO, tiny_args

B, SIDE = 8, 8  # global batch, image side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bn_free_encoder() -> nn.Module:
    """A deterministic encoder without batch norm, so per-rank and whole-batch forward passes agree."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 32), nn.ReLU(), nn.Linear(32, 16))
    net.out_dim = 16
    return net


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(B, 3, SIDE, SIDE, generator=g), torch.rand(B, 3, SIDE, SIDE, generator=g)


def worker(rank: int, world: int, port: int, out: str, plain_gather: bool) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        if plain_gather:  # the common bug: all_gather cuts the other ranks' gradient off
            distributed.gather_with_grad = distributed.gather
        gather_check(rank, world, out)
    finally:
        dist.destroy_process_group()


def gather_check(rank: int, world: int, out: str) -> None:
    """One rank's half of the check (in a joined process group); rank 0 saves the mean loss, the gradients
    and both MoCo queues to ``out``. tests/test_multinode.py runs it across two torchrun "nodes"."""
    model = DistributedDataParallel(SimCLR(bn_free_encoder(), temperature=0.3))
    v1, v2 = batch()
    n = B // world
    rows = slice(rank * n, (rank + 1) * n)
    loss = model(v1[rows], v2[rows])
    loss.backward()  # DDP averages the gradients over ranks
    mean_loss = distributed.mean(loss.detach()).item()

    # MoCo's queue: every rank enqueues every rank's keys, so the queues stay equal.
    moco = MoCoV2(bn_free_encoder(), queue_size=12, key_bn_splits=1)
    moco(v1[rows], v2[rows])
    queues = distributed.all_objects(moco.queue.clone())
    if rank == 0:
        torch.save(
            {
                "loss": mean_loss,
                "grads": {k: p.grad for k, p in model.module.named_parameters()},
                "queues": queues,
                "ptr": moco.queue_ptr.item(),
            },
            out,
        )


def assert_equals_one_process(two: dict) -> None:
    """The 2-rank result ``two`` (from :func:`gather_check`) equals one process with the whole batch."""
    one = SimCLR(bn_free_encoder(), temperature=0.3)
    v1, v2 = batch()
    loss = one(v1, v2)
    loss.backward()
    assert two["loss"] == pytest.approx(loss.item(), rel=1e-6)
    for name, p in one.named_parameters():
        assert torch.allclose(two["grads"][name], p.grad, rtol=1e-5, atol=1e-7), name
    q0, q1 = two["queues"]  # MoCo: both ranks' keys went into both queues, which are equal
    assert torch.equal(q0, q1) and two["ptr"] == B


def two_ranks(tmp_path, plain_gather: bool = False) -> dict:
    out = str(tmp_path / f"rank0-{plain_gather}.pt")
    mp.spawn(worker, args=(2, free_port(), out, plain_gather), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def test_two_ranks_with_half_batches_equal_one_process_with_the_whole_batch(tmp_path):
    one = SimCLR(bn_free_encoder(), temperature=0.3)
    v1, v2 = batch()
    loss = one(v1, v2)
    loss.backward()
    assert_equals_one_process(two_ranks(tmp_path))  # loss, every gradient, and MoCo's queues

    # The same run with a plain all_gather: same loss value, wrong gradients.
    broken = two_ranks(tmp_path, plain_gather=True)
    assert broken["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert not all(torch.allclose(broken["grads"][n], p.grad, rtol=1e-3, atol=1e-6) for n, p in one.named_parameters())


def train_worker(rank: int, world: int, port: int, cfg_dict: dict, resume: bool, stop_after: int) -> None:
    """One rank of a torchrun-like run, in-process so the stop can be placed at an exact step."""
    from simclr_core.config import TrainConfig
    from simclr_core.training import loop, train

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    real = loop.stop_requested

    def stop_at(s):
        if s.step == stop_after and s.stop_reason is None:
            s.stop_reason = "test"
        return real(s)

    loop.stop_requested = stop_at
    try:
        train(TrainConfig.from_dict(cfg_dict), resume=resume)
    finally:
        distributed.cleanup()


@pytest.mark.parametrize("method", ["simclr", "moco_v2"])
def test_two_process_resume_is_exact(tmp_path, method):
    from tests.conftest import tiny_config

    def run(name: str, resume: bool = False, stop_after: int = -1) -> None:
        cfg = tiny_config(tmp_path, name)
        cfg.run.device, cfg.method.name, cfg.method.queue_size = "cpu", method, 48
        mp.spawn(train_worker, args=(2, free_port(), cfg.to_dict(), resume, stop_after), nprocs=2, join=True)

    run("straight")
    run("stopped", stop_after=3)  # mid-epoch 2, both ranks
    assert checkpoints.load(tmp_path / "runs" / "stopped" / "last.pt")["step"] == 3
    run("stopped", resume=True)
    a = checkpoints.load(tmp_path / "runs" / "straight" / "last.pt")
    b = checkpoints.load(tmp_path / "runs" / "stopped" / "last.pt")
    assert a["step"] == b["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert all(torch.equal(x, y) for x, y in zip(a["view_generators"], b["view_generators"], strict=True))


def torchrun(tmp_path, nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "simclr_core.train",
        *args,
    ]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "moco_v2", "byol"])
def test_torchrun_two_processes_then_resume_on_one(tmp_path, method):
    args = tiny_args(tmp_path) + ["--method", method, "--device", "cpu", "--queue-size", "48"]
    done = torchrun(tmp_path, 2, args)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "tiny"
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 4
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "epoch"] == [2, 4]  # rank 0 alone wrote them
    assert len([m for m in metrics if m["kind"] == "step"]) == 4
    assert "x 2 processes" in (run / "train.log").read_text()
    ckpt = checkpoints.load(run / "last.pt")
    assert len(ckpt["view_generators"]) == 2 and ckpt["step"] == 4

    # Resume on one process: the data order is the same; the note says the views are reseeded.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    more = subprocess.run(
        [
            sys.executable,
            "-m",
            "simclr_core.train",
            "--resume",
            "tiny",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--epochs",
            "3",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert more.returncode == 0, more.stderr[-3000:]
    assert json.loads((run / "status.json").read_text())["step"] == 6
    assert "saved by 2 process(es), resumed on 1" in (run / "train.log").read_text()

    # And back on two (the resume flags work under torchrun too).
    again = torchrun(tmp_path, 2, ["--resume", "tiny", "--runs-dir", str(tmp_path / "runs"), "--epochs", "4"])
    assert again.returncode == 0, again.stderr[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 8
    assert "saved by 1 process(es), resumed on 2" in (run / "train.log").read_text()


@pytest.mark.slow
def test_torchrun_rejects_a_batch_that_does_not_split(tmp_path):
    args = tiny_args(tmp_path) + ["--device", "cpu", "--batch-size", "31", "--subset", "64"]
    done = torchrun(tmp_path, 2, args)
    assert done.returncode != 0
    assert "must split evenly over the 2 processes; use a multiple of 2" in done.stderr


def test_a_stop_file_stops_every_rank_after_one_checkpoint(tmp_path):
    args = tiny_args(tmp_path) + ["--device", "cpu", "--epochs", "1000", "--knn-every", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "simclr_core.train",
        *args,
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "runs" / "tiny"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "last.pt").exists():  # the end of epoch 1 at least
            time.sleep(0.2)
        (run / "STOP").touch()
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped" and "STOP file" in status["message"]
    ckpt = checkpoints.load(run / "last.pt")
    assert ckpt["step"] == status["step"] and 0 < ckpt["step"] < 2000
