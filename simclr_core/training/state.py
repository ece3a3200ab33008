"""What a checkpoint holds and how a session gets it back: exact resume, never a non-finite weight, and
``--keep-best``'s ``best.pt``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from simclr_core import distributed
from simclr_core.config import resolved
from simclr_core.embeddings import checkpoint_key
from simclr_core.errors import UserError
from simclr_core.evaluation import label_free
from simclr_core.evaluation.health import explain, likely_causes
from simclr_core.methods.base import as_module
from simclr_core.runs import checkpoints
from simclr_core.runs.rundir import CheckpointInfo, best_record

if TYPE_CHECKING:
    from simclr_core.training.session import Session


# What best.pt holds of last.pt: what evaluate, embed and export read (no optimiser or RNG state)
BEST_KEYS = ("format", "method", "arch", "model", "epoch", "step", "steps_per_epoch")


def save_checkpoint(s: Session, best: dict[str, Any] | None = None) -> None:
    """Write ``last.pt`` (exact-resume state) and ``backbone.pt`` atomically; every rank calls it, rank 0 writes.

    ``best``: this epoch beat ``best.pt`` (:func:`best_candidate`); it is written first, then ``best.json``,
    then ``last.pt`` with the new record, so a kill between them leaves a best.pt that a resume reads
    correctly (:func:`restore_best`). Weights with inf or NaN are never written: the last good checkpoints stay.
    """
    bad = nonfinite(as_module(s.method))
    if distributed.any_rank(bad is not None, s.device):
        raise diverged(
            s, f"the weights became non-finite ({bad or 'on another process'}) at epoch {s.epoch}, step {s.step}"
        )
    generators = distributed.all_objects(s.generator.get_state().cpu())  # each rank draws its own views
    losses = distributed.mean(torch.stack(s.epoch_losses)).cpu() if s.epoch_losses else torch.empty(0)
    if not distributed.is_main():
        return
    state = {
        "format": checkpoints.FORMAT,
        "method": s.cfg.method.name,
        "arch": s.arch,
        "model": s.method.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "scaler": s.scaler.state_dict(),
        "epoch": s.epoch,
        "step": s.step,
        "steps_per_epoch": s.steps_per_epoch,
        "view_generator": generators[0],
        "view_generators": generators,
        "epoch_losses": losses,
        "rng": checkpoints.rng_state(),
        "best": best or s.best,  # what best.pt holds: a resume keeps comparing with it
    }
    try:
        if best is not None:
            checkpoints.save_atomic({**{k: state[k] for k in BEST_KEYS}, "best": best}, s.run.best_ckpt)
            s.best = best
            s.run.write_best_info(best, checkpoint_key(s.run.best_ckpt))
        checkpoints.save_atomic(state, s.run.last_ckpt)
        s.saved_at = (s.epoch, s.step)  # the message of a failure below must name the last.pt now on disk
        s.run.write_checkpoint_info(CheckpointInfo(s.epoch, s.step, s.steps_per_epoch), checkpoint_key(s.run.last_ckpt))
        checkpoints.save_backbone(s.method.encoder.backbone, s.arch, s.run.backbone_path, s.view_kwargs["size"])
    except OSError as e:  # a full disk, or a folder made read-only: the previous last.pt is intact
        kept = f"last.pt still holds epoch {s.saved_at[0]}, step {s.saved_at[1]}" if s.saved_at else "no checkpoint yet"
        what = "the checkpoint"
        if best is not None and s.best is not best:  # best.pt itself failed: last.pt was not touched
            what = "best.pt"
        elif s.saved_at == (s.epoch, s.step):  # last.pt was written, backbone.pt (or last.json) was not
            what, kept = "backbone.pt", f"last.pt holds epoch {s.epoch}, step {s.step}"
        raise UserError(
            f"cannot write {what} of epoch {s.epoch}, step {s.step} in {s.run.path} "
            f"({e.strerror or e}); {kept}. Free space there (or make it writable), then resume "
            f"with --resume {s.run.name}"
        ) from None
    s.saved_at = (s.epoch, s.step)


def restore(s: Session) -> None:
    """Load ``last.pt`` into the session: weights, optimiser, scaler, step, every RNG."""
    path = s.run.last_ckpt
    if not path.is_file():
        return  # stopped before its first checkpoint: start from scratch
    ckpt = checkpoints.load_training(path, map_location=s.device, resume=True)  # every field below checked
    checkpoints.check_architecture(ckpt["arch"], s.arch, path)
    checkpoints.load_state(as_module(s.method), ckpt["model"], path)
    try:  # the right types (checked), yet contents that do not fit this optimiser or these generators
        s.optimizer.load_state_dict(ckpt["optimizer"])
        s.scaler.load_state_dict(ckpt["scaler"])
        checkpoints.set_rng_state(ckpt["rng"])
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as e:
        raise _damaged(path, "its optimiser or RNG state", e) from None
    if ckpt["steps_per_epoch"] != s.steps_per_epoch:
        raise UserError(
            f"{path} was saved with {ckpt['steps_per_epoch']} steps per epoch but the data now "
            f"gives {s.steps_per_epoch}: the dataset changed; start a new run"
        )
    s.epoch, s.step = ckpt["epoch"], ckpt["step"]
    s.saved_at = (s.epoch, s.step)
    generators = ckpt.get("view_generators") or [ckpt["view_generator"]]
    if len(generators) == distributed.world_size():
        try:
            s.generator.set_state(generators[distributed.rank()].cpu())
        except RuntimeError as e:  # a tensor, but not a generator's state
            raise _damaged(path, "its view generator state", e) from None
    else:  # another number of processes: same data order, fresh (seeded) view streams
        s.generator.manual_seed(view_seed(s.cfg.run.seed, distributed.rank(), s.step))
        s.notes.append(
            f"note: saved by {len(generators)} process(es), resumed on {distributed.world_size()}; "
            "the data order continues exactly, the random views from new seeded streams"
        )
    s.epoch_losses = list(ckpt["epoch_losses"].to(s.device))
    s.best = restore_best(s, best_record(ckpt.get("best")))


def keep_best_direction(signal: str) -> int:
    """+1 when a higher value of a ``--keep-best`` signal is better, -1 when a lower one is."""
    return 1 if signal == "knn_top1" else label_free.direction(signal)


def best_candidate(s: Session, record: dict[str, Any]) -> dict[str, Any] | None:
    """The best.pt record of the epoch just ended (its metrics line ``record``) when ``--keep-best``'s signal
    is measured there and beats the kept one; else None. Ties keep the earlier epoch."""
    signal = s.cfg.run.keep_best
    value = record.get(signal) if signal else None
    if signal is None or not isinstance(value, int | float) or not math.isfinite(value):
        return None  # not a monitor epoch, or the signal is undefined there (alpha-ReQ of a collapsed matrix)
    kept = s.best
    if kept is not None and kept["signal"] == signal and keep_best_direction(signal) * (value - kept["value"]) <= 0:
        return None
    return {"signal": signal, "value": float(value), "epoch": s.epoch, "step": s.step}


def restore_best(s: Session, saved: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``best.pt`` holds, for a resume to compare with: ``best.json``'s record of the file on disk, else
    the one last.pt saved (``saved``) while best.pt is there; None without best.pt, or when it was kept by
    another signal (the next monitor epoch replaces it, said in the log).

    best.json wins over last.pt: a kill after best.pt was written and before last.pt leaves last.pt's record
    one epoch behind the file.
    """
    path = s.run.best_ckpt
    if not path.is_file():
        return None
    record = s.run.best_info(checkpoint_key(path)) or saved
    signal = s.cfg.run.keep_best
    if record is not None and signal is not None and record["signal"] != signal:
        s.notes.append(
            f"note: best.pt holds the best epoch by {record['signal']} (epoch {record['epoch']}); --keep-best "
            f"{signal} replaces it at the next monitor epoch"
        )
        return None
    return record


def _damaged(path: Path, part: str, e: BaseException) -> UserError:
    """A checkpoint whose fields have the right types but whose ``part`` does not fit the run being resumed."""
    reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
    return UserError(
        f"checkpoint {path} is damaged ({part} does not fit this run: {reason}); restore it from a copy, "
        "or start a new run"
    )


def view_seed(seed: int, rank: int, step: int = 0) -> int:
    """Seed of a rank's view generator; rank 0 of a fresh run uses seed + 1, as a single process does."""
    return seed + 1 + 1_000_003 * rank + 7_919 * step


def nonfinite(module: torch.nn.Module) -> str | None:
    """The name of the first parameter or buffer holding inf or NaN, or None when all are finite.

    A NaN loss is caught at its step, but the update before it may already have put inf into a
    batch-norm running variance. One CPU-GPU sync for the whole model; the names only on failure.
    """
    tensors = [(n, t) for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_floating_point()]
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):
        return None
    return next(n for n, t in tensors if not bool(torch.isfinite(t).all()))


def diverged(s: Session, what: str) -> UserError:
    """The error for a run whose numbers blew up: which checkpoint survives, and a resume that can work."""
    kept = (
        f"kept the last good checkpoint (epoch {s.saved_at[0]}, step {s.saved_at[1]})"
        if s.saved_at
        else "no checkpoint was written before it"
    )
    causes = likely_causes(s.cfg)
    if causes:  # a setting far from its method's usual: say which, and the flags that undo it
        return UserError(f"{what}; {kept}; {explain(causes, s.run.name)}")
    optim = s.cfg.optim
    fix = f"--lr {resolved(optim.lr, 'optim.lr') / 2:.3g}"
    if s.cfg.method.temperature is not None:
        fix += f" (or a higher --temperature than {s.cfg.method.temperature:g})"
    return UserError(f"{what}; {kept}; resume with a lower learning rate: --resume {s.run.name} {fix}")
