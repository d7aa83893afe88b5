"""Choosing the device and the autocast precision of a run."""

from __future__ import annotations

import contextlib

import torch

from .errors import PolyalignError, shown

DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
"""The device types polyalign trains and runs on."""


def device_problem(name: str, here: bool = True) -> str | None:
    """Why ``name`` is not a device polyalign can use, or None. Without ``here`` only what no machine
    could fix is checked (a recipe may be validated on a laptop and trained on a GPU server):
    the name, the type, and whether this build of PyTorch supports it at all."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        return f"{shown(name)} is not a device; use auto, cpu, cuda or cuda:N"
    if device.type not in DEVICE_TYPES:
        return f"{shown(name)}: polyalign does not run on {device.type!r} devices; use auto, {', '.join(DEVICE_TYPES)}"
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            return f"{shown(name)}: this build of PyTorch has no CUDA support; use auto or cpu"
        if not here:
            return None
        if not torch.cuda.is_available():
            return f"{shown(name)} was asked for but no CUDA device is available; use auto or cpu"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return (f"{shown(name)}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                    f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        return f"{shown(name)}: Apple MPS is not available to this PyTorch on this machine; use auto or cpu"
    if device.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        return f"{shown(name)}: no Intel XPU is available to this PyTorch on this machine; use auto or cpu"
    return None


def pick_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, if this machine has it.

    ``option`` names where the value came from (a recipe key or a command-line flag) in errors.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(name)
    if problem is not None:
        raise PolyalignError(f"{option}: {problem}")
    return torch.device(name)


def resolved_precision(precision: str, device: torch.device) -> str:
    """What ``precision`` trains in on ``device``: ``auto`` is bf16 on CUDA, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``bf16`` (or ``auto`` on CUDA), fp16 autocast for ``fp16``; nothing for fp32."""
    precision = resolved_precision(precision, device)
    if precision == "fp16":
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_precision(precision: str, device: torch.device, option: str = "train.precision") -> None:
    """Refuse fp16 off CUDA: its gradient scaler and fast fp16 kernels are CUDA's."""
    if precision == "fp16" and device.type != "cuda":
        raise PolyalignError(f"{option}: fp16 trains on CUDA only (with a gradient scaler); this run is on "
                             f"{device.type}. Use bf16 (autocast) or fp32 here, or train.device=cuda.")
