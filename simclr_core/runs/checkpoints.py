"""Checkpoints: written atomically, read with ``weights_only=True``, checked against the model.

The one reader of weights: training's ``last.pt``, the trunk's ``backbone.pt``, and the backbone
that :func:`load_backbone` gives users from a run, a ``backbone.pt`` or an exported ``.safetensors``
(:mod:`simclr_core.exporters` only writes).

``last.pt`` holds everything exact resume needs; ``best.pt`` (``--keep-best``) the weights of the best
monitor epoch, without the optimiser; ``backbone.pt`` is a plain torchvision ResNet state dict (fc
removed) with ``backbone.json`` saying how to build the module it fits.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from simclr_core.errors import UserError
from simclr_core.files import temp_path, write_error, write_json_atomic
from simclr_core.models import IMAGENET_MEAN, IMAGENET_STD, Backbone, build_backbone
from simclr_core.runs.rundir import RunDir, resolve_run

FORMAT = "simclr-studio/1"


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file, fsync, then rename over ``path``: a crash leaves the old file."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except RuntimeError as e:  # torch's zip writer reports a short write (a full disk) so, not as an OSError
        err = write_error(e, tmp)  # before the half file goes: it tells a full disk from another failure
        if err is None:
            raise
        raise err from None
    finally:  # a full disk or a kill: never leave a half file that keeps the disk full
        tmp.unlink(missing_ok=True)
    # fsync the folder too, so the rename itself survives a power cut.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Read a checkpoint with ``weights_only=True``; unreadable files raise a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False: never for a file that may be hostile
        raise UserError(
            f"checkpoint {path} holds Python objects that a safe load refuses to run (it was not "
            "written by SimCLR Studio, or was tampered with); it was not loaded. Use the run's own "
            "last.pt or start a new run"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch raises several types for a damaged zip
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"checkpoint {path} is truncated or corrupt ({reason[:160]}); restore it from a copy or start a new run"
        ) from None


TRAINING_KEYS = ("model", "arch", "epoch", "step")  # what every last.pt (and best.pt) holds, whatever its method
# What a resume reads besides (training/state.py: restore), with the type each must have.
RESUME_FIELDS: dict[str, type] = {
    "optimizer": dict,
    "scaler": dict,
    "steps_per_epoch": int,
    "epoch_losses": torch.Tensor,
    "rng": dict,
}


def _what(obj: Any) -> str:
    """What a loaded file holds, in words: "a bare tensor", "a list", "a dict with keys [...]"."""
    if isinstance(obj, torch.Tensor):
        return "a bare tensor"
    if isinstance(obj, dict) and "conv1.weight" in obj:
        return "a backbone's weights alone (backbone.pt)"
    return f"a {type(obj).__name__}" + (f" with keys {sorted(map(str, obj))[:5]}" if isinstance(obj, dict) else "")


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _training_problem(ckpt: dict[str, Any], resume: bool) -> str | None:
    """What is wrong with a training checkpoint's fields, for the callers that read them (None: nothing).

    Every field a caller uses is checked for its type here, so a damaged file is one message naming it,
    never a TypeError deep in a resume or an evaluation.
    """
    bad = [k for k, v in ckpt["model"].items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        return f"its model weights hold {type(ckpt['model'][bad[0]]).__name__} under {bad[0]!r}, not a tensor"
    for key in ("epoch", "step"):
        if not _count(ckpt[key]):
            return f"{key!r} is {ckpt[key]!r}, not a whole number"
    if not resume:
        return None
    missing = [k for k in RESUME_FIELDS if k not in ckpt]
    if "view_generators" not in ckpt and "view_generator" not in ckpt:
        missing.append("view_generators")
    if missing:
        return f"it has no {', '.join(map(repr, missing))}: what a resume continues from"
    for key, kind in RESUME_FIELDS.items():
        if not isinstance(ckpt[key], kind) or (kind is int and not _count(ckpt[key])):
            return f"{key!r} is {type(ckpt[key]).__name__}, not {kind.__name__}"
    generators = ckpt.get("view_generators") or [ckpt.get("view_generator")]
    if not isinstance(generators, list) or not all(isinstance(g, torch.Tensor) for g in generators):
        return "its view generators are not tensors"
    opt, rng = ckpt["optimizer"], ckpt["rng"]
    if not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        return "'optimizer' lacks its state or param_groups"
    numpy_state = rng.get("numpy")
    if (
        not isinstance(rng.get("python"), tuple | list)
        or not isinstance(rng.get("torch"), torch.Tensor)
        or not isinstance(rng.get("cuda"), tuple | list)
        or not isinstance(numpy_state, tuple | list)
        or len(numpy_state) < 2
        or not isinstance(numpy_state[1], torch.Tensor)
    ):
        return "'rng' does not hold the Python, NumPy and torch generator states"
    return None


def load_training(path: str | Path, map_location: str | torch.device = "cpu", resume: bool = False) -> dict[str, Any]:
    """:func:`load` a training checkpoint (``last.pt``), or a UserError saying what the file holds instead.

    The fields every reader uses are checked (types of model, arch, epoch, step); with ``resume`` also
    those a resume reads (optimizer, scaler, steps_per_epoch, generator and RNG states).
    """
    ckpt = load(path, map_location)
    if (
        isinstance(ckpt, dict)
        and all(k in ckpt for k in TRAINING_KEYS)
        and isinstance(ckpt["model"], dict)
        and isinstance(ckpt["arch"], dict)
    ):
        problem = _training_problem(ckpt, resume)
        if problem is None:
            return ckpt
        # evaluation, embeddings and export read the weights alone: a file only a resume cannot use still serves them
        raise UserError(
            f"checkpoint {path} is damaged ({problem}); restore it from a copy, or start a new run"
            + (
                " (evaluate, embed and export can still read its weights)"
                if _training_problem(ckpt, False) is None
                else ""
            )
        )
    raise UserError(
        f"checkpoint {path} holds {_what(ckpt)}, not a training checkpoint (last.pt: model, arch, epoch "
        "and step); put the run's own last.pt back, or start a new run"
    )


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """:func:`load` a state dict (``backbone.pt``, a timm export): names to tensors, or a UserError naming the file."""
    state = load(path)
    if (
        isinstance(state, dict)
        and state
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        return state
    raise UserError(
        f"{path} holds {_what(state)}, not a backbone's weights (names -> tensors); restore it from a copy, "
        "or resume its run for an epoch to write it again"
    )


def check_architecture(saved: dict, expected: dict, path: str | Path) -> None:
    """Raise a UserError naming the differing fields when a checkpoint is of another model."""
    diff = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
    if diff:
        what = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise UserError(
            f"checkpoint {path} is of another architecture ({what}); "
            "use the run's own config or a checkpoint of this model"
        )


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``load_state_dict`` with a UserError instead of a shape traceback."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise UserError(
            f"checkpoint {path} does not fit this model ({first}); it was saved by another architecture"
        ) from None


def encoder_state(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The online encoder's part of a method's state dict (every method keeps it as ``encoder``).

    MoCo's key encoder and queue and BYOL's target and predictor are training machinery; what
    evaluation and embeddings use is the encoder alone.
    """
    return {k.removeprefix("encoder."): v for k, v in model_state.items() if k.startswith("encoder.")}


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, in types weights_only accepts."""
    np_state = np.random.get_state(legacy=True)  # the tuple form: the global generator is always MT19937
    assert isinstance(np_state, tuple)
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_backbone(backbone: nn.Module, arch: dict, path: str | Path, image_size: int | None = None) -> None:
    """Save the trunk as a torchvision-ResNet state dict plus ``<name>.json`` describing it
    (``image_size``: the side of the views it was trained on)."""
    path = Path(path)
    save_atomic({k: v.detach().cpu() for k, v in backbone.state_dict().items()}, path)
    meta = {
        "format": FORMAT,
        "backbone": arch["backbone"],
        "cifar_stem": arch["cifar_stem"],
        "image_size": image_size,
        "input": "RGB float in [0, 1], normalised with mean/std below",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "load": "simclr_core.load_backbone(path), or build the torchvision ResNet, "
        "set fc = Identity (and for cifar_stem conv1 = Conv2d(3, 64, 3, 1, 1, bias=False), "
        "maxpool = Identity), then load_state_dict",
    }
    write_json_atomic(path.with_suffix(".json"), meta)


def backbone_meta(path: str | Path) -> dict[str, Any]:
    """``backbone.json`` beside the ``backbone.pt`` at ``path`` (which ResNet its weights fit), checked:
    a UserError naming the file when it is missing, not UTF-8 JSON, or lacks backbone / cifar_stem."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise UserError(f"{meta_path} is missing: it says which ResNet {path} belongs to")
    fix = "restore it from a copy, or resume its run for an epoch to write it again"
    try:
        meta = json.loads(meta_path.read_bytes())
    except OSError as e:
        raise UserError(f"cannot read {meta_path} ({e.strerror or e}); {fix}") from None
    except ValueError as e:  # not UTF-8, not JSON, truncated
        raise UserError(f"{meta_path} is damaged ({str(e).splitlines()[0][:120]}); {fix}") from None
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("backbone"), str)
        or not isinstance(meta.get("cifar_stem"), bool)
        or not (meta.get("image_size") is None or _count(meta["image_size"]))
    ):
        raise UserError(f"{meta_path} is damaged (not a JSON object naming backbone and cifar_stem); {fix}")
    return meta


def load_trunk(path: str | Path) -> nn.Module:
    """Rebuild the ResNet trunk saved by :func:`save_backbone` (features out, no classifier)."""
    meta = backbone_meta(path)
    net, _ = build_backbone(meta["backbone"], meta["cifar_stem"])
    load_state(net, load_weights(path), path)
    return net


def run_trunk(run: RunDir, checkpoint: str | Path = "last") -> tuple[nn.Module, dict[str, Any]]:
    """The trunk of a run's checkpoint and its metadata: "last", the newest (backbone.pt, written every epoch),
    "best" (best.pt, kept by --keep-best) or a training checkpoint's path (:meth:`RunDir.checkpoint_file`)."""
    cfg = run.config()
    if str(checkpoint) == "last":
        if not run.backbone_path.is_file():
            raise UserError(f"run '{run.name}' has no checkpoint yet: train it for an epoch first")
        trunk, meta = _from_backbone_pt(run.backbone_path)
        epoch = run.status().get("epoch")
    else:
        path = run.checkpoint_file(checkpoint)
        ckpt = load_training(path)
        arch = ckpt["arch"]
        # a checkpoint of another model must not be exported under this run's name
        mine = {"backbone": cfg.model.backbone, "cifar_stem": cfg.model.cifar_stem}
        check_architecture(arch, {k: v for k, v in mine.items() if v is not None}, path)
        if not isinstance(arch.get("backbone"), str) or not isinstance(arch.get("cifar_stem"), bool):
            raise UserError(f"checkpoint {path} is damaged (its arch names no backbone and stem); use another")
        trunk, _ = build_backbone(arch["backbone"], arch["cifar_stem"])
        state = encoder_state(ckpt["model"])
        load_state(trunk, {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, path)
        meta = {"format": FORMAT, "backbone": arch["backbone"], "cifar_stem": arch["cifar_stem"]}
        epoch = ckpt["epoch"]
    meta.update(run=run.name, config=cfg.to_dict(), epoch=epoch)
    meta.setdefault("image_size", cfg.views.crop_size or cfg.data.image_size)  # backbone.json of older runs lacks it
    return trunk, meta


def _from_safetensors(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged header
        raise UserError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]})") from None
    if "backbone" not in header:
        raise UserError(f"{path} has no SimCLR Studio metadata (backbone, cifar_stem): export it with simclr-export")
    meta = {k: json.loads(v) for k, v in header.items()}
    trunk, _ = build_backbone(meta["backbone"], bool(meta["cifar_stem"]))
    load_state(trunk, state, path)
    return trunk, meta


def _from_backbone_pt(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    trunk = load_trunk(path)  # needs, and checks, the backbone.json beside it
    return trunk, backbone_meta(path)


def load_backbone(source: str | Path | RunDir, device: str | torch.device = "cpu") -> Backbone:
    """A trained backbone, images in [0, 1] -> features h, in eval mode.

    Args:
        source: a run (:class:`RunDir`, its folder, or its name under ``./checkpoints`` /
            ``$SIMCLR_RUNS_DIR``), a ``.safetensors`` file written by :func:`export_backbone`, or a
            ``backbone.pt`` with its ``backbone.json``.
    """
    path = Path(source) if not isinstance(source, RunDir) else None
    if path is not None and path.is_file():
        trunk, meta = _from_safetensors(path) if path.suffix == ".safetensors" else _from_backbone_pt(path)
    else:
        trunk, meta = run_trunk(resolve_run(source))
    with torch.no_grad():  # the feature width, from one tiny forward pass
        dim = int(trunk.eval()(torch.zeros(1, 3, 32, 32)).shape[1])
    return Backbone(trunk, dim, meta).to(device).eval()
