"""Reading a checkpoint safely: safetensors weights, ``weights_only`` state, no pickled code.

Training, evaluation and inference all read checkpoints through these functions; writing them
(and pruning them) is the trainer's business, in the training room (``training/checkpoint.py``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from polyalign.core.errors import PolyalignError, cut

from .run_files import CHECKPOINTS_DIR

WEIGHTS = "model.safetensors"
STATE = "state.pt"


class CheckpointError(PolyalignError):
    """A checkpoint could not be written or read."""


def resolve_checkpoint(directory: Path) -> Path:
    """``directory``, or its previous version if a crash interrupted the swap."""
    directory = Path(directory)
    if (directory / WEIGHTS).is_file():
        return directory
    old = directory.with_name(f".{directory.name}.old")
    if (old / WEIGHTS).is_file():
        return old
    raise CheckpointError(f"no checkpoint at {directory} (expected {WEIGHTS} inside)")


def has_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` (or its previous version kept mid-swap) holds a checkpoint."""
    try:
        resolve_checkpoint(directory)
        return True
    except CheckpointError:
        return False


def run_checkpoint(run_dir: Path, name: str) -> Path:
    """The checkpoint folder ``name`` (``last``, ``best``) of a run directory, or an error saying
    which it has, or that it was stopped before writing any."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    directory = root / name
    if has_checkpoint(directory):
        return directory
    found = sorted(p.name for p in root.glob("[!.]*") if has_checkpoint(p)) if root.is_dir() else []
    if not found:
        raise CheckpointError(f"{run_dir} has no checkpoint: the run was stopped before it wrote its first one "
                              f"(`polyalign train --resume {run_dir}` starts it over)")
    raise CheckpointError(f"{run_dir}: no checkpoint {name!r}; it has: {', '.join(found)} (a run saves 'best' "
                          f"only when it has a validation split)")


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The safetensors weights of a checkpoint directory."""
    path = resolve_checkpoint(directory) / WEIGHTS
    try:
        return load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from exc


def load_failure(exc: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, without PyTorch's advice to load it
    with ``weights_only=False`` (that would run whatever code the file holds: never do it)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = [line for line in lines if not any(w in line for w in ("weights_only", "torch.load", "trusted source",
                                                                     "safe_globals", "documentation"))]
    reason = reasons[0].split(". ")[0] if reasons else "not a plain file of tensors"
    return cut(f"{type(exc).__name__}: {reason}", 300)


def torch_load_safely(path: Path) -> Any:
    """``torch.load`` of tensors and plain values only (``weights_only``: no code can run). PyTorch's
    warnings about the pickle protocol of a file it may then refuse are not shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def load_state(directory: Path) -> dict[str, Any]:
    """The training state of a checkpoint (``weights_only`` unpickling: no code can run)."""
    path = resolve_checkpoint(directory) / STATE
    try:
        return torch_load_safely(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: cannot resume from this checkpoint") from None
    except Exception as exc:
        raise CheckpointError(
            f"refused to load {path}: it is not a plain training-state file ({load_failure(exc)}). "
            f"polyalign only loads tensors and plain values, never pickled code.") from exc
