"""The trainer's saved state: its counters, the optimiser and scheduler, and every RNG.

A checkpoint's ``state.pt`` holds only tensors and plain values, so that it loads with
``weights_only`` (:func:`polyalign.files.weights.load_state`) and a resumed run continues
exactly where the interrupted one was, mid-epoch included.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from polyalign.core.recipe import TrainSection
from polyalign.files.weights import STATE, CheckpointError, load_state, load_weights

from .checkpoint import (
    latest_checkpoint,
    link_checkpoint,
    prune_step_checkpoints,
    save_checkpoint,
    step_checkpoint_name,
)


@dataclass
class TrainProgress:
    """Where a run is: optimizer steps and epochs done, the position inside the epoch, the best
    validation loss, skipped NaN steps, the running sum of this epoch's step losses, and the
    layout a streamed epoch was cut with (processes x workers; see ``TrainingData.layout``)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val: float = math.inf
    nan_skips: int = 0
    epoch_loss: float = 0.0
    epoch_steps: int = 0
    data_layout: str = ""

    def next_epoch(self) -> None:
        """Count an epoch as done and reset the within-epoch counters."""
        self.epoch += 1
        self.batch_in_epoch, self.epoch_loss, self.epoch_steps = 0, 0.0, 0

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TrainProgress":
        """The counters saved in a ``state.pt`` (raises KeyError/TypeError/ValueError if absent)."""
        return cls(int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"]),
                   float(state["best_val"]), int(state["nan_skips"]), float(state["epoch_loss"]),
                   int(state["epoch_steps"]), str(state.get("data_layout", "")))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state, as tensors and plain values (loadable with ``weights_only``)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "numpy_gauss": [int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_gauss"][0], state["numpy_gauss"][1]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(root: Path, weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
               progress: TrainProgress, scheduler: Any, cfg: TrainSection, best: bool = False,
               scaler: torch.amp.GradScaler | None = None) -> None:
    """Checkpoint weights (``model.*``, ``loss.*``) and state under ``root`` as ``last`` (and
    ``best`` when asked).

    With ``checkpoint_every`` the state is first written as ``step-NNNNNNNN`` (the newest
    ``keep_last`` of them are kept) and ``best``/``last`` are hard-linked copies of it.
    ``last`` is always swapped in last, so a kill at any point resumes from a complete state.
    """
    state = {**asdict(progress), "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
             "rng": rng_state()}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    names = ([step_checkpoint_name(progress.step)] if cfg.checkpoint_every else []) + \
        (["best"] if best else []) + ["last"]
    save_checkpoint(root / names[0], weights, state)
    for name in names[1:]:
        link_checkpoint(root / names[0], root / name)
    prune_step_checkpoints(root, cfg.keep_last)  # also when a resume turned checkpoint_every off


def restore_state(root: Path, set_weights: Callable[[dict[str, torch.Tensor]], None],
                  set_optimizer: Callable[[dict[str, Any]], None], scheduler: Any,
                  scaler: torch.amp.GradScaler | None = None) -> TrainProgress | None:
    """Load the newest checkpoint under ``root`` through ``set_weights`` and ``set_optimizer``,
    into the scheduler (and gradient scaler) and the RNGs; None when the run saved none (it was
    killed before its first checkpoint)."""
    directory = latest_checkpoint(root)
    if directory is None:
        return None
    set_weights(load_weights(directory))
    state = load_state(directory)
    try:
        set_optimizer(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
        progress = TrainProgress.from_state(state)
        set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"cannot resume from {directory / STATE}: it does not hold this run's training state "
            f"({type(exc).__name__}: {exc}). Was it written by another polyalign version or for "
            f"another recipe?") from exc
    return progress
