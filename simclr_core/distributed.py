"""Data parallelism with ``torch.distributed``: what a run started by ``torchrun`` needs.

``torchrun --nproc_per_node N -m simclr_core.train ...`` sets RANK, WORLD_SIZE, LOCAL_RANK and
the rendezvous variables; :func:`setup` joins the process group (NCCL on GPUs, gloo on CPUs).
Everything here is a no-op in a single process, so the training code reads the same either way.

Many machines: ``torchrun --nnodes N --rdzv-backend c10d --rdzv-endpoint HOST:PORT`` on each one runs the
same code; the ranks span the machines and nothing here depends on which machine a rank is on. A rank
that goes away makes the others' next collective fail (at once when its process ends, after
:func:`collective_timeout` when its machine or network goes silent); :func:`peer_lost` recognises that.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from simclr_core.errors import UserError

TIMEOUT_ENV = "SIMCLR_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
# What gloo says when the other end of a collective went away: its process ended (the kernel closed or
# reset the connection), or it sent nothing within the timeout (the op that timed out, then every later
# one). NCCL's and the store's failures are DistError subclasses.
_GLOO_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out waiting")
_GLOO_TIMED_OUT = "Application timeout caused pair closure"


def world_size() -> int:
    """Number of processes in the run (1 without torchrun)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on the process that writes files (rank 0)."""
    return rank() == 0


def local_rank() -> int:
    """This process's index on its machine, which picks its GPU."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def launched_by_torchrun() -> bool:
    """True when the environment describes a multi-process run."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_type: str) -> None:
    """Join the process group that torchrun described (once); ``device_type`` picks the backend."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    if device_type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", timeout=collective_timeout())


def collective_timeout() -> timedelta:
    """How long a collective waits for the other ranks before it fails: ``SIMCLR_DIST_TIMEOUT`` seconds, 600 by default.

    A machine that goes away sends no reset, so without a bound the other ranks would wait forever. It must
    exceed the longest work that rank 0 does alone while the others wait (the kNN monitor, a checkpoint).
    """
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UserError(
            f"{TIMEOUT_ENV}={raw!r} must be a number of seconds above 0 (unset, it is {DEFAULT_TIMEOUT_S:g})"
        )
    return timedelta(seconds=seconds)


def peer_lost(e: BaseException) -> bool:
    """True when ``e`` is a collective that failed because another rank went away: its process ended, its
    machine or network went down, or it did not answer within :func:`collective_timeout`."""
    if world_size() == 1:
        return False
    if isinstance(e, dist.DistError):  # NCCL's and the store's failures
        return True
    text = str(e) if isinstance(e, RuntimeError) else ""
    return _GLOO_TIMED_OUT in text or ("gloo" in text and any(mark in text for mark in _GLOO_LOST_PEER))


def lost_rank() -> int | None:
    """The rank that went away, where one rank's view tells: with two ranks, the other one; else None.

    With more, every survivor's collective fails alike (the failure spreads through the survivors that
    exit), so no rank knows which one went first.
    """
    return 1 - rank() if world_size() == 2 else None


def cleanup() -> None:
    """Leave the process group."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradient over ranks and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # (n, D) -> (R*n, D)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # (R*n, D) -> (n, D)
        # Every rank's loss depends on this rank's rows, so their gradient is the sum of all ranks'.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n : (dist.get_rank() + 1) * n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` stacked in rank order, with the gradient flowing back to each rank's part.

    ``torch.distributed.all_gather`` alone returns tensors cut off from autograd, so the other
    ranks' rows act as constants and this rank's rows lose the gradient that the other ranks'
    losses send them (lightly issue #1528). All ranks must pass the same shape.
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` stacked in rank order, without gradient (e.g. MoCo's keys for the queue)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over ranks (a new tensor; gloo has no AVG, so SUM / R)."""
    if world_size() == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (so all ranks stop together)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's picklable ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank."""
    if world_size() > 1:
        dist.barrier()
