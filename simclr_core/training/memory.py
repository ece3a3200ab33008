"""Whether one training step fits in memory, checked before the first one.

On a CPU a step that does not fit is not an error: the kernel's OOM killer ends the process without a
word (a 4096-px view size did). So :func:`check_step_memory` measures what the encoder keeps for the
backward pass on a small input, scales it to the run's batch and view size, and refuses a run that
cannot fit with a message naming a ``--crop-size`` and a ``--batch-size`` that would. On a GPU an
out-of-memory step raises an error the runner already turns into a message, so only CPUs are checked.
"""

from __future__ import annotations

import copy

import torch

from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.hardware import available_memory
from simclr_core.methods import Method
from simclr_core.methods.base import as_module

PROBE_SIDE = 64  # measured at this view side (or the run's, when smaller) and scaled by area
VIEW_COPIES = 3  # float copies of each view batch the view pipeline holds at once (crop, colour, blur)
PARAM_COPIES = 3  # each weight, its gradient and the optimiser's momentum
# The backward pass holds gradients of the largest activations beside them: measured peaks on a 2-core CPU
# (ResNet-18/50 and the small ResNet, 32-224 px, SimCLR, MoCo v2, BYOL) were within 25% of this estimate.
BACKWARD = 1.2


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


def step_memory(cfg: TrainConfig, method: Method, side: int, world: int = 1) -> tuple[int, int]:
    """(bytes that scale with batch x side^2, bytes that do not) of one training step of this process."""
    batch = cfg.optim.batch_size // world
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
    if room <= 0:
        raise UserError(
            f"the {cfg.model.backbone} model alone needs about {fixed / gb:.1f} GB of memory to train and "
            f"{avail / gb:.1f} GB are free; free memory or choose a smaller --backbone"
        )
    side_fit = int(side * (room / scaled) ** 0.5) // 8 * 8
    batch_fit = int(cfg.optim.batch_size * room / scaled) // world * world
    fixes = [f"--crop-size {side_fit}"] if side_fit >= 8 else []
    if batch_fit >= 2:
        fixes.append(f"--batch-size {batch_fit}")
    raise UserError(
        f"one training step at --batch-size {cfg.optim.batch_size} with {side}-px views needs about "
        f"{(scaled + fixed) / gb:.1f} GB of memory and {avail / gb:.1f} GB are free (it would be killed "
        f"without a message); start the run with {' or '.join(fixes) or 'a smaller --backbone'}"
    )
