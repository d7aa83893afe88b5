"""Encoder ``vector``: an MLP over fixed-size float vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from polyalign.core.encoder import FILE_VALUES, Encoder, resolve_file
from polyalign.core.errors import PolyalignError
from polyalign.files.npy_file import read_npy


class VectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: int | None = Field(None, gt=0, description="input size; default: from the data")
    hidden: list[int] = Field(default_factory=list, description="hidden widths; [] = one linear layer")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer")


def load_vector(value: Any, root: Path | None) -> torch.Tensor:
    """A list/array of numbers, or a ``.npy`` file (a path relative to ``root``, or a shard
    member), as a float32 vector."""
    if isinstance(value, FILE_VALUES):
        path = resolve_file(value, root, "vector .npy")
        arr = read_npy(path, "vector file")
    else:
        arr = value
    return torch.as_tensor(np.asarray(arr, dtype=np.float32)).reshape(-1)


class VectorEncoder(Encoder):
    """Float vectors -> MLP features. With ``hidden: []`` the encoder is the identity, so
    the model's projection head is the single linear layer (the Symile XOR setup)."""

    def __init__(self, dim: int, hidden: list[int], dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        layers: list[nn.Module] = []
        for a, b in zip([dim, *hidden][:-1], hidden):
            layers += [nn.Linear(a, b), nn.GELU()] + ([nn.Dropout(dropout)] if dropout else [])
        self.net = nn.Sequential(*layers)
        self.width = hidden[-1] if hidden else dim

    def rebuild_options(self) -> dict[str, Any]:
        return {"dim": self.dim}

    def load(self, value: Any, root: Path | None) -> torch.Tensor:
        x = load_vector(value, root)
        if x.numel() != self.dim:
            raise PolyalignError(f"expected a vector of {self.dim} numbers, got {x.numel()}")
        return x

    def load_batch(self, values: list[Any], root: Path | None) -> torch.Tensor:
        """In-memory vectors stacked in one NumPy call (files go through :meth:`load`)."""
        if isinstance(values[0], FILE_VALUES):  # a mix of files and arrays fails below and falls back
            return super().load_batch(values, root)
        x = torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(len(values), -1)
        if x.shape[1] != self.dim:
            raise PolyalignError(f"expected vectors of {self.dim} numbers, got {x.shape[1]}")
        return x

    def export_example(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_vector(config: VectorConfig, example: Any = None, root: Path | None = None) -> VectorEncoder:
    """Factory for ``vector``: ``dim`` from the config, else from an example value of the data."""
    dim = config.dim
    if dim is None:
        if example is None:
            raise PolyalignError("encoder 'vector' needs dim (no example value to infer it from)")
        dim = load_vector(example, root).numel()
    return VectorEncoder(dim, config.hidden, config.dropout)
