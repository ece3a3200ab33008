"""A run's trained backbone in the formats other tools read: ``simclr-export --run NAME --format F``.

- ``safetensors``: the torchvision ResNet trunk's state dict (normalised input, no classifier) with its
  metadata in the header: architecture, stem, normalisation, feature width and the run's config.
  :func:`simclr_core.runs.checkpoints.load_backbone` reads it back (and backbone.pt, and a run folder).
- ``timm``: a state dict ``timm.create_model(name, num_classes=0)`` loads strictly; for the CIFAR stem
  :func:`timm_model` swaps timm's stem for the 3x3 one first (README: "Export").
- ``onnx``: :class:`~simclr_core.models.Backbone` (normalisation inside: feed RGB in [0, 1]) with a
  dynamic batch, height and width; checked against PyTorch with onnxruntime as it is written.
- ``torchscript``: the same module, traced.

Every file is written to a temporary name and renamed into place, so a failure leaves no half file.
timm, onnx and onnxruntime are the ``export`` extra (``pip install simclr-studio[export]``).
"""

from __future__ import annotations

import errno
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from simclr_core.errors import UserError
from simclr_core.files import remove_stale_temps, write_error
from simclr_core.models import IMAGENET_MEAN, IMAGENET_STD, Backbone
from simclr_core.runs import checkpoints
from simclr_core.runs.rundir import RunDir, resolve_run

__all__ = ["FORMATS", "export_backbone", "onnx_check", "timm_model", "unavailable"]

SUFFIX = {"safetensors": ".safetensors", "timm": ".timm.pth", "onnx": ".onnx", "torchscript": ".torchscript.pt"}
FORMATS = tuple(SUFFIX)
TIMM_NAMES = ("resnet18", "resnet34", "resnet50")  # timm's names for the torchvision ResNets we train
ONNX_TOLERANCE = 1e-4  # max |onnxruntime - PyTorch| on random inputs
EXTRA = "pip install 'simclr-studio[export]' (or: pip install -r requirements-export.txt)"


# How to load each format: said after an export, by the CLI and by the app's download button.
HOW_TO_LOAD = {
    "safetensors": "load: simclr_core.load_backbone('{path}')  (or safetensors.torch.load_file: a torchvision "
    "ResNet state dict, fc removed; the header holds the architecture)",
    "timm": "load: simclr_core.exporters.timm_model('{path}')  (ImageNet stem: timm.create_model(name, "
    "num_classes=0, checkpoint_path='{path}'))",
    "onnx": "load: onnxruntime.InferenceSession('{path}'); input 'images' float32 RGB in [0, 1], (N, 3, H, W)",
    "torchscript": "load: torch.jit.load('{path}'); input float32 RGB in [0, 1], (N, 3, H, W)",
}


def _need(module: str, fmt: str, install: str = EXTRA) -> Any:
    """Import an optional package (of the export extra by default), or say how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise UserError(f"the {fmt} format needs the package '{module}': {install}") from None


# ---- writing -------------------------------------------------------------------------------------------


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temp)`` beside ``path``, then rename; a failure removes the temp file and names the fix."""
    if not path.parent.is_dir():
        raise UserError(f"the folder {path.parent} does not exist: create it or choose another --out")
    # before writing: torch.save, torch.jit.save and safetensors report a closed folder each in its own way
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"cannot write {path}: the folder {path.parent} is read-only; choose another --out")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # a file of our own first: a folder that takes none (/proc, a full disk) says why in an OSError, before
        # a library reports it in its own way
        open(tmp, "wb").close()
        write(tmp)
        os.replace(tmp, path)
    except UserError:
        raise
    except PermissionError:
        raise UserError(f"cannot write {path}: permission denied; choose another --out") from None
    except IsADirectoryError:
        raise UserError(f"cannot write {path}: it is a folder; choose another --out (a file name)") from None
    except Exception as e:  # noqa: BLE001 - torch, safetensors and onnx each report a failed write in their own way
        err = write_error(e, tmp)  # the OSError it stands for (a full disk: ENOSPC), or None: not a write failure
        if err is None:
            raise
        space = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        raise UserError(
            f"cannot write {path}: {err.strerror or err}; {'free some space or ' if space else ''}choose another --out"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_bytes(path: Path, save: Callable[[io.BytesIO], None]) -> None:
    """``save`` into memory, then the bytes into ``path``: PyTorch's own file writer, given a full disk,
    throws from a C++ destructor and aborts the process (no message, a half file left); Python's write
    raises OSError(ENOSPC) instead."""
    buf = io.BytesIO()
    save(buf)
    path.write_bytes(buf.getbuffer())


def _header(meta: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata: string values, JSON-encoded."""
    keep = {k: meta.get(k) for k in ("backbone", "cifar_stem", "image_size", "run", "epoch", "config")}
    keep.update(
        format=checkpoints.FORMAT,
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        input="RGB float in [0, 1], normalised with mean / std (torchvision convention)",
    )
    return {k: json.dumps(v) for k, v in keep.items()}


def _safetensors(trunk: nn.Module, meta: dict[str, Any], path: Path) -> None:
    _need("safetensors", "safetensors", "pip install safetensors")
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in trunk.state_dict().items()}
    _write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata=_header(meta)))


def _timm(trunk: nn.Module, meta: dict[str, Any], path: Path) -> None:
    if meta["backbone"] not in TIMM_NAMES:
        raise UserError(
            f"timm has no {meta['backbone']}; export it as safetensors, onnx or torchscript "
            f"(timm holds {', '.join(TIMM_NAMES)})"
        )
    _need("timm", "timm")
    state = {k: v.detach().cpu() for k, v in trunk.state_dict().items()}  # timm's ResNet keys are torchvision's

    def write(tmp: Path) -> None:
        _write_bytes(tmp, lambda f: torch.save(state, f))
        x = _example(meta)  # checked as it is written: timm's model loads it strictly and computes the same
        with torch.no_grad():
            diff = float((timm_model(tmp)(x) - trunk(x)).abs().max())
        if diff > 1e-4:
            raise UserError(
                f"timm's {meta['backbone']} computes other features from this state dict "
                f"(max difference {diff:.2e}); not written"
            )

    _write_atomic(path, write)


def _example(meta: dict[str, Any]) -> torch.Tensor:
    side = int(meta.get("image_size") or (32 if meta.get("cifar_stem") else 64))
    return torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0))


def _onnx(trunk: nn.Module, meta: dict[str, Any], path: Path) -> None:
    _need("onnx", "onnx")
    model = Backbone(trunk, 0).eval()
    kwargs: dict[str, Any] = {}
    if "dynamo" in torch.onnx.export.__code__.co_varnames:  # torch >= 2.5: the TorchScript-based exporter,
        kwargs["dynamo"] = False  # which needs no onnxscript and handles dynamic axes of a ResNet exactly

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                model,
                (_example(meta),),
                str(tmp),
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch"}},
                opset_version=17,
                **kwargs,
            )
        import onnx

        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(
            proto,
            {**_header(meta), "input": json.dumps("float32 RGB in [0, 1], (N, 3, H, W); the normalisation is inside")},
        )
        onnx.save(proto, str(tmp))
        diff = onnx_check(tmp, model)
        if diff > ONNX_TOLERANCE:
            raise UserError(f"the ONNX export differs from PyTorch by {diff:.2e} (> {ONNX_TOLERANCE}); not written")

    _write_atomic(path, write)


def onnx_check(path: str | Path, model: nn.Module, batch: int = 5) -> float:
    """Max |onnxruntime - PyTorch| over a random batch of ``batch`` images (another batch size than the
    export's, so the dynamic axis is checked too)."""
    ort = _need("onnxruntime", "onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    side = 40 if not isinstance(shape[2], int) else shape[2]
    x = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    got = session.run(None, {"images": x.numpy()})[0]
    return float(abs(got - ref).max())


def _torchscript(trunk: nn.Module, meta: dict[str, Any], path: Path) -> None:
    model = Backbone(trunk, 0).eval()
    extra = {"simclr_studio.json": json.dumps({k: json.loads(v) for k, v in _header(meta).items()})}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            traced = torch.jit.trace(model, _example(meta))
            _write_bytes(tmp, lambda f: torch.jit.save(traced, f, _extra_files=extra))

    _write_atomic(path, write)


WRITERS: dict[str, Callable[[nn.Module, dict[str, Any], Path], None]] = {
    "safetensors": _safetensors,
    "timm": _timm,
    "onnx": _onnx,
    "torchscript": _torchscript,
}


def export_backbone(
    run: RunDir | str | Path, fmt: str, out: str | Path | None = None, checkpoint: str | Path = "last"
) -> Path:
    """Write the run's backbone in ``fmt`` (one of :data:`FORMATS`); returns the file.

    Args:
        run: a :class:`RunDir`, a run folder or a run's name.
        out: the file to write (default: ``<run>/export/<run name><suffix>``, with ``-best`` (or the
            checkpoint file's stem) after the name for another checkpoint than the last).
        checkpoint: "last", "best" (best.pt, kept by ``--keep-best``) or a training checkpoint's path.
    """
    if fmt not in WRITERS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = resolve_run(run)
    trunk, meta = checkpoints.run_trunk(run, checkpoint)
    if out is None:
        try:
            run.export_dir.mkdir(exist_ok=True)
        except FileExistsError:  # a file named export
            raise UserError(
                f"{run.export_dir} is a file, where simclr-export keeps its files; move it away, or pass --out FILE"
            ) from None
        except OSError as e:  # a read-only run folder
            raise UserError(
                f"cannot create {run.export_dir} ({e.strerror or e}); pass --out FILE in a writable folder"
            ) from None
        remove_stale_temps(run.export_dir)  # of exports that were killed, or aborted by a full disk
        which = "" if str(checkpoint) == "last" else f"-{Path(checkpoint).stem}"
        path = run.export_dir / f"{run.name}{which}{SUFFIX[fmt]}"
    else:
        path = Path(out)
    WRITERS[fmt](trunk.eval(), meta, path)
    return path


NEEDS = {"safetensors": ("safetensors",), "timm": ("timm",), "onnx": ("onnx", "onnxruntime"), "torchscript": ()}


def unavailable(fmt: str, backbone: str) -> str | None:
    """Why ``fmt`` cannot be written for a ``backbone`` here (a package missing, timm lacking the model), or None."""
    from importlib.util import find_spec

    missing = [m for m in NEEDS[fmt] if find_spec(m) is None]
    if missing:
        return f"needs {', '.join(missing)}: {EXTRA if fmt != 'safetensors' else 'pip install safetensors'}"
    if fmt == "timm" and backbone not in TIMM_NAMES:
        return f"timm has no {backbone}"
    return None


def timm_model(path: str | Path) -> nn.Module:
    """The timm ResNet of a ``timm`` export, features out (``num_classes=0``), weights loaded strictly.

    ImageNet stem: exactly ``timm.create_model(name, num_classes=0, checkpoint_path=path)``. CIFAR stem
    (3x3 first conv, no max-pool): timm has no such ResNet, so the model is created and then given the
    stem before the weights load; the state dict tells which stem it holds.
    """
    timm = _need("timm", "timm")
    state = checkpoints.load_weights(path)
    blocks = len({k.split(".")[1] for k in state if k.startswith("layer1.")})
    name = {(2, False): "resnet18", (3, False): "resnet34", (3, True): "resnet50"}.get(
        (blocks, "layer1.0.conv3.weight" in state)
    )
    if name is None:
        raise UserError(f"{path} is not a ResNet-18/34/50 state dict")
    model = timm.create_model(name, num_classes=0, pretrained=False)
    if state["conv1.weight"].shape[-1] == 3:  # the CIFAR stem
        model.conv1 = nn.Conv2d(3, state["conv1.weight"].shape[0], 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    model.load_state_dict(state, strict=True)
    return model.eval()
