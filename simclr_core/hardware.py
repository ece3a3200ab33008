"""Device choice and the numerics that go with it (autocast dtype, channels_last)."""

from __future__ import annotations

import contextlib
import os

import torch

from simclr_core.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when present, else cpu; anything unavailable is a UserError.

    Only the devices training is written for: torch knows others (xpu, meta, hpu, ...), which fail later
    with a traceback of their own.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible here; use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: Apple's MPS backend is not available here; use --device cpu")
    return device


def available_memory() -> int | None:
    """Bytes of host memory a new allocation can get (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def gpu_count() -> int:
    """CUDA GPUs visible here (0 without CUDA): how many processes torchrun may start, one per GPU."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def describe(device: torch.device) -> str:
    """A short human name: the GPU's name, or 'CPU (N threads)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type.upper()} ({torch.get_num_threads()} threads)"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting, or None for plain fp32."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return None
    if device.type != "cuda":
        raise UserError(f"--precision {precision} needs a CUDA GPU; use --precision fp32 on {device.type}")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` when a dtype is set, else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
