"""Checkpoints: safetensors weights + training state, written atomically, loaded safely."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import PolyalignError

WEIGHTS = "model.safetensors"
STATE = "state.pt"


class CheckpointError(PolyalignError):
    """A checkpoint could not be written or read."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}. The previous "
                              f"version of the file, if any, is unchanged.") from exc


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(directory: Path, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write ``weights`` (safetensors) and ``state`` (torch, tensors/plain types only) to ``directory``.

    The files go to a temporary folder that replaces ``directory`` by renames only, so a
    crash at any point leaves either the old or the new checkpoint loadable.
    """
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    old = directory.with_name(f".{directory.name}.old")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(_contiguous(weights), str(tmp / WEIGHTS))
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(tmp / STATE, buf.getvalue())
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not save checkpoint {directory}: {exc.strerror or exc}. "
                              f"The last complete checkpoint is kept.") from exc


def resolve_checkpoint(directory: Path) -> Path:
    """``directory``, or its previous version if a crash interrupted the swap."""
    directory = Path(directory)
    if (directory / WEIGHTS).is_file():
        return directory
    old = directory.with_name(f".{directory.name}.old")
    if (old / WEIGHTS).is_file():
        return old
    raise CheckpointError(f"no checkpoint at {directory} (expected {WEIGHTS} inside)")


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The safetensors weights of a checkpoint directory."""
    path = resolve_checkpoint(directory) / WEIGHTS
    try:
        return load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from exc


def load_state(directory: Path) -> dict[str, Any]:
    """The training state of a checkpoint (``weights_only`` unpickling: no code can run)."""
    path = resolve_checkpoint(directory) / STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: cannot resume from this checkpoint") from None
    except Exception as exc:
        raise CheckpointError(
            f"refused to load {path}: it is not a plain training-state file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). polyalign only loads tensors and plain "
            f"values, never pickled code.") from exc
