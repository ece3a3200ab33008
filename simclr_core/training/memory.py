"""Whether one training step fits in memory: checked before the first one, and searched for on a GPU.

On a CPU a step that does not fit is not an error: the kernel's OOM killer ends the process without a
word (a 4096-px view size did). So :func:`check_step_memory` measures what the encoder keeps for the
backward pass on a small input, scales it to the run's batch and view size, and refuses a run that
cannot fit with a message naming a ``--crop-size`` and a ``--batch-size`` that would.

On a GPU running out of memory raises an error, so there the batch that fits is found by trying:
:func:`fitting_batch` halves a batch until one forward and backward (:func:`trial_step`) fits. The
runner names that batch when a run runs out (:func:`oom_message`), and ``--batch-size auto`` starts
from it (:func:`auto_batch`).
"""

from __future__ import annotations

import copy
import gc
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from simclr_core import distributed
from simclr_core.config import AUTO_BATCH_CPU, AUTO_BATCH_FREE, TrainConfig, resolved
from simclr_core.errors import UserError
from simclr_core.hardware import autocast, available_memory, describe
from simclr_core.methods import Method
from simclr_core.methods.base import as_module

if TYPE_CHECKING:
    from simclr_core.training.session import Session

PROBE_SIDE = 64  # measured at this view side (or the run's, when smaller) and scaled by area
VIEW_COPIES = 3  # float copies of each view batch the view pipeline holds at once (crop, colour, blur)
PARAM_COPIES = 3  # each weight, its gradient and the optimiser's momentum
# The backward pass holds gradients of the largest activations beside them: measured peaks on a 2-core CPU
# (ResNet-18/50 and the small ResNet, 32-224 px, SimCLR, MoCo v2, BYOL) were within 25% of this estimate.
BACKWARD = 1.2
AUTO_BATCH_MAX = 2**16  # --batch-size auto tries no larger batch (LARS's learning rate is 77 there, near its bound)
# torch.cuda.OutOfMemoryError is torch.OutOfMemoryError since torch 2.5; both, for older ones
OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    {torch.cuda.OutOfMemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)}
)
TryStep = Callable[[int], bool]  # one forward and backward of a batch of this many images: does it fit?


def saved_bytes_per_image(encoder: torch.nn.Module, side: int) -> int:
    """Bytes that a forward pass of ``encoder`` keeps for backward, per image of ``side`` pixels.

    Measured on a copy (batch norm's running statistics of the run's own encoder stay untouched; no
    random numbers are drawn), with two images, as batch norm needs more than one.
    """
    probe = copy.deepcopy(encoder).train()
    params = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr not in seen:  # weights are counted once, elsewhere; views of one tensor once
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        probe(torch.zeros(2, 3, side, side))
    return total // 2


def step_memory(
    cfg: TrainConfig, method: Method, side: int, world: int = 1, batch: int | None = None
) -> tuple[int, int]:
    """(bytes that scale with batch x side^2, bytes that do not) of one training step of this process, at
    the global ``batch`` (default: the config's)."""
    batch = (batch or resolved(cfg.optim.batch_size, "optim.batch_size")) // world
    probe_side = min(side, PROBE_SIDE)
    per_image = saved_bytes_per_image(method.encoder, probe_side) * (side / probe_side) ** 2
    # images through the encoder with gradients: both views (MoCo v2 without its symmetric loss: the queries)
    graded = batch if cfg.method.name == "moco_v2" and not cfg.method.moco_symmetric else 2 * batch
    views = 2 * batch * 3 * side * side * 4 * VIEW_COPIES
    weights = sum(p.numel() * p.element_size() for p in as_module(method).parameters()) * PARAM_COPIES
    return int(graded * per_image * BACKWARD + views), weights


def check_step_memory(cfg: TrainConfig, method: Method, side: int, device: torch.device, world: int = 1) -> None:
    """A UserError when one step at ``side``-pixel views cannot fit in the free memory of a CPU run."""
    if device.type != "cpu":
        return
    avail = available_memory()
    if avail is None:
        return
    scaled, fixed = step_memory(cfg, method, side, world)
    if scaled + fixed <= avail:
        return
    gb = 2**30
    room = avail - fixed
    batch = resolved(cfg.optim.batch_size, "optim.batch_size")
    if room <= 0:
        raise UserError(
            f"the {cfg.model.backbone} model alone needs about {fixed / gb:.1f} GB of memory to train and "
            f"{avail / gb:.1f} GB are free; free memory or choose a smaller --backbone"
        )
    side_fit = int(side * (room / scaled) ** 0.5) // 8 * 8
    batch_fit = int(batch * room / scaled) // world * world
    fixes = [f"--crop-size {side_fit}"] if side_fit >= 8 else []
    if batch_fit >= 2:
        fixes.append(f"--batch-size {batch_fit}")
    raise UserError(
        f"one training step at --batch-size {batch} with {side}-px views needs about "
        f"{(scaled + fixed) / gb:.1f} GB of memory and {avail / gb:.1f} GB are free (it would be killed "
        f"without a message); start the run with {' or '.join(fixes) or 'a smaller --backbone'}"
    )


def fitting_batch(try_step: TryStep, start: int, smallest: int = 2) -> int | None:
    """The largest of ``start``, ``start // 2``, ... (not below ``smallest``) at which ``try_step`` fits; None if none.

    ``try_step(b)`` runs one forward and backward of ``b`` images and says whether that fits: False, or an
    out-of-memory error. :func:`trial_step` makes the real one; tests pass a fake that runs out above a batch.
    """
    batch = start
    while batch >= smallest:
        try:
            fits = try_step(batch)
        except OOM_ERRORS:
            fits = False
        # Here, past the except block, the failed try's traceback (and the tensors its frames held) is gone.
        _free_cached()
        if fits:
            return batch
        batch //= 2
    return None


def trial_step(
    method: Method,
    view_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    keep_free: float = 0.0,
    allow_cpu: bool = False,
) -> TryStep | None:
    """One forward and backward of ``b`` random ``view_size``-px view pairs, as training runs it (autocast,
    channels_last), that leaves the method as it was: weights, gradients, buffers (batch-norm statistics,
    MoCo's queue), train/eval mode and every random number generator.

    It fits when it raises no out-of-memory error and, on a GPU, its peak leaves ``keep_free`` of the
    device's memory free. None off CUDA unless ``allow_cpu``: a CPU that runs out is killed, not told
    (:func:`check_step_memory` covers CPUs).
    """
    if device.type != "cuda" and not allow_cpu:
        return None
    module = as_module(method)
    cuda = device.type == "cuda"
    limit = torch.cuda.mem_get_info(device)[1] * (1 - keep_free) if cuda else None

    def attempt(batch: int) -> bool:
        buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
        params = list(module.parameters())
        grads = [p.grad for p in params]  # set aside: backward would add to them in place
        training = module.training
        for p in params:
            p.grad = None
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        try:
            with torch.random.fork_rng(devices=[device] if cuda else []):  # the run's own random numbers stay
                v1, v2 = (torch.rand(batch, 3, view_size, view_size, device=device) for _ in range(2))
                if cuda:
                    v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
                module.train()
                with autocast(device, amp_dtype):
                    loss = method(v1, v2)
                loss.backward()
                del v1, v2, loss
            if limit is None:
                return True
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device) <= limit
        finally:
            with torch.no_grad():
                for name, b in module.named_buffers():
                    b.copy_(buffers[name])
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            module.train(training)

    return attempt


def auto_batch(
    cfg: TrainConfig,
    method: Method,
    side: int,
    device: torch.device,
    images: int,
    world: int = 1,
    amp_dtype: torch.dtype | None = None,
) -> tuple[int, str]:
    """``--batch-size auto``: (the global batch, a line for ``train.log`` saying how it was chosen).

    A power of two per process, at most the training images. On a CUDA GPU the largest whose step
    (:func:`trial_step`, on the method already on the device) fits with :data:`AUTO_BATCH_FREE` of the
    memory free: room for the kNN monitor's forward passes and features, the optimiser's momentum (made
    at the first step) and the allocator's slack. Elsewhere a GPU cannot be asked, and a CPU that runs
    out is killed, so: :data:`AUTO_BATCH_CPU`, halved while the step's estimate (:func:`step_memory`)
    would leave less than that share of the free memory.
    """
    smallest = max(1, 2 // world)  # a global batch of 2 at least, as the field requires
    per = images // world
    if per < smallest:
        raise UserError(f"{images} training images are too few for a batch over {world} processes; add images")
    top = min(per, (AUTO_BATCH_MAX if device.type == "cuda" else AUTO_BATCH_CPU) // world)
    top = 1 << (max(top, 1).bit_length() - 1)  # the largest power of two not above it
    if device.type == "cuda":
        step = trial_step(method, side, device, amp_dtype, keep_free=AUTO_BATCH_FREE)
        found = fitting_batch(step, top, smallest) if step is not None else None
        if found is None:
            raise UserError(
                f"a step of {smallest * world} {side}-px images does not fit on {describe(device)}; "
                "choose a smaller --backbone or --crop-size"
            )
        return found * world, (
            f"--batch-size auto: {found * world}, the largest power of two{' per process' if world > 1 else ''} "
            f"whose step fits {describe(device)} with {AUTO_BATCH_FREE:.0%} of its memory free"
        )
    avail = available_memory() if device.type == "cpu" else None
    if avail is not None:
        scaled, fixed = step_memory(cfg, method, side, world, batch=top * world)
        per_image, room = scaled / top, avail * (1 - AUTO_BATCH_FREE) - fixed
        while top > smallest and per_image * top > room:  # below: check_step_memory says what does not fit
            top //= 2
    return top * world, (
        f"--batch-size auto: {top * world} on {describe(device)} ({AUTO_BATCH_CPU} at most without a CUDA GPU to "
        f"try, halved to fit the training images and {1 - AUTO_BATCH_FREE:.0%} of the free memory)"
    )


def oom_message(error: BaseException, s: Session | None, batch: int | None) -> str:
    """The one line a run that ran out of GPU memory ends with: the batch that fits, found by halving."""
    # the batch size fixes the steps per epoch, so a smaller one is a new run, not a resume
    at = "while starting the run" if batch is None else f"at batch size {batch}"
    fallback = f"out of GPU memory {at}; start a new run with a lower --batch-size (or --precision bf16)"
    if s is None or batch is None:  # out of memory before the run was built: nothing to try a step with
        return fallback
    traceback.clear_frames(error.__traceback__)  # the failed step's activations, held by its frames
    s.optimizer.zero_grad(set_to_none=True)
    _free_cached()
    world = distributed.world_size()
    sync_bn = any(isinstance(m, torch.nn.SyncBatchNorm) for m in as_module(s.method).modules())
    try:
        # one process alone: SyncBatchNorm would wait for the others' statistics
        step = (
            None
            if world > 1 and sync_bn
            else trial_step(s.method, s.view_kwargs["size"], s.device, s.amp_dtype, keep_free=AUTO_BATCH_FREE)
        )
        found = fitting_batch(step, batch // world // 2, max(1, 2 // world)) if step is not None else None
    except Exception:  # noqa: BLE001 - the search must not replace the run's own message
        found = None
    if found is None:
        return fallback
    fit = found * world
    kept = f" (the last checkpoint, epoch {s.saved_at[0]}, is kept)" if s.saved_at else ""
    where = "this GPU" if world == 1 else f"these {world} GPUs"
    return (
        f"out of GPU memory at batch size {batch}; a batch of {fit} fits {where}: start a new run with "
        f"--batch-size {fit}{kept}"
    )


def _free_cached() -> None:
    """Give the memory of dropped tensors back (cycles collected), so the next try starts from the same free memory."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
