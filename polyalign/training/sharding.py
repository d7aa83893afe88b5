"""Sharded training (``train.strategy: fsdp``): FSDP2 per encoder, full state dicts for checkpoints.

Each encoder is one ``fully_shard`` unit (its parameters are gathered for its own forward and
backward only), and the rest of the model (heads, norms, learned missing embeddings) is the
root unit. The loss's few parameters (temperatures, biases: scalars, which FSDP2 cannot shard)
stay whole on every process; the trainer averages their gradients as under DDP.

Checkpoints hold a **full state dict gathered on rank 0** (``torch.distributed.checkpoint``'s
``get_model_state_dict`` / ``get_optimizer_state_dict`` with ``full_state_dict=True``): the same
``model.safetensors`` as a DDP or single-process run (so ``polyalign.load``, ``export`` and
``eval`` need nothing else), and a ``state.pt`` whose optimizer state is keyed by parameter
name. Every process reads it back on ``--resume`` and keeps its own shard.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from polyalign.core.errors import PolyalignError
from polyalign.core.model import MultiModalModel

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


class ShardedParts:
    """The model sharded over the processes, with the loss beside it (not sharded)."""

    def __init__(self, model: MultiModalModel, loss: nn.Module, device: torch.device, world: int):
        mesh = init_device_mesh(device.type, (world,))
        try:
            for m, encoder in model.encoders.items():
                fully_shard(encoder, mesh=mesh)
            fully_shard(model, mesh=mesh)
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise PolyalignError(f"train.strategy: fsdp cannot shard this model ({exc}); use train.strategy: ddp"
                                 ) from exc
        # one module holding both, so that state dict names are `model.*` and `loss.*`, as in checkpoints
        self.both = nn.ModuleDict({"model": model, "loss": loss})

    def full_state(self, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Full weights and optimizer state on rank 0 (empty elsewhere); every process must call it."""
        weights = get_model_state_dict(self.both, options=_FULL)
        return weights, get_optimizer_state_dict(self.both, optimizer, options=_FULL)

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Load full weights (``model.*``, ``loss.*``); each process keeps its shard."""
        set_model_state_dict(self.both, weights, options=StateDictOptions(full_state_dict=True))

    def load_optimizer(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Load a full optimizer state written by :meth:`full_state`."""
        set_optimizer_state_dict(self.both, optimizer, state, options=StateDictOptions(full_state_dict=True))
