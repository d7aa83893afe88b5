"""Choosing the device and the autocast precision of a run."""

from __future__ import annotations

import contextlib

import torch

from .errors import PolyalignError


def pick_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device.

    ``option`` names where the value came from (a recipe key or a command-line flag) in errors.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise PolyalignError(f"{option}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PolyalignError(f"{option}: 'cuda' was asked for but no CUDA device is available; "
                             "use auto or cpu")
    return device


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``bf16`` (or ``auto`` on CUDA), fp16 autocast for ``fp16``; nothing for fp32."""
    if precision == "fp16":
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_precision(precision: str, device: torch.device, option: str = "train.precision") -> None:
    """Refuse fp16 off CUDA: its gradient scaler and fast fp16 kernels are CUDA's."""
    if precision == "fp16" and device.type != "cuda":
        raise PolyalignError(f"{option}: fp16 trains on CUDA only (with a gradient scaler); this run is on "
                             f"{device.type}. Use bf16 (autocast) or fp32 here, or train.device=cuda.")
