"""Encoder ``imu``: accelerometer recordings (CSV or .npy) of any length -> 1-D CNN -> features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from polyalign.plugin import Encoder, PolyalignError, pad_with_mask, resolve_file


class ImuConfig(BaseModel):
    """Options a recipe can set under ``encoder: {plugin: imu, ...}``."""

    model_config = ConfigDict(extra="forbid")
    axes: int = Field(3, ge=1, description="columns per sample (3 = x, y, z)")
    max_length: int = Field(1000, ge=8, description="samples kept per recording (longer ones are cut)")
    hidden: int = Field(64, ge=4, description="channels of the convolutions (= the output width)")
    layers: int = Field(3, ge=1, description="convolution layers, each halving the time resolution")


def read_recording(value: Any, root: Path | None) -> np.ndarray:
    """A ``(samples, axes)`` array: a ``.csv`` (one header row) or ``.npy`` file, or an array itself."""
    if not isinstance(value, (str, Path)):
        return np.asarray(value, dtype=np.float32)  # e.g. polyalign.load(run).embed({"imu": [array]})
    path = resolve_file(value, root, "IMU recording")  # "IMU recording file not found: ..." if absent
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False).astype(np.float32)
        return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise PolyalignError(f"cannot read IMU recording {path}: {exc}") from exc


class ImuEncoder(Encoder):
    """Accelerometer recordings (.csv or .npy, samples x axes) into a 1-D CNN with a masked mean."""

    name = "imu"
    Options = ImuConfig

    def __init__(self, config: ImuConfig):
        super().__init__()
        self.config = config
        self.width = config.hidden  # the core adds a projection from `width` to the embedding size
        channels = [config.axes] + [config.hidden] * config.layers
        self.convs = nn.ModuleList(nn.Conv1d(a, b, 5, stride=2, padding=2) for a, b in zip(channels, channels[1:]))

    def decode(self, value: Any, root: Path | None) -> torch.Tensor:
        """One recording -> ``(samples, axes)``, each axis minus its mean (removes gravity)."""
        x = read_recording(value, root)
        if x.ndim != 2 or x.shape[1] != self.config.axes:
            name = value if isinstance(value, (str, Path)) else "value"
            raise PolyalignError(f"IMU recording {name} has shape {x.shape}; expected (samples, "
                                 f"{self.config.axes})")
        x = x[: self.config.max_length]
        return torch.from_numpy(x - x.mean(axis=0, keepdims=True))

    def collate(self, values: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pad to the longest recording; ``mask`` is True on real samples."""
        signal, mask = pad_with_mask(values)
        return {"signal": signal, "mask": mask}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h, mask = batch["signal"].transpose(1, 2), batch["mask"]  # (B, axes, T), (B, T)
        for conv in self.convs:
            # zero the padding before each convolution, so a recording's features do not depend on
            # how long the others in its batch are; position j of the output looks at input 2j
            h = nn.functional.gelu(conv(h * mask.unsqueeze(1)))
            mask = mask[:, ::2]
        weights = mask.unsqueeze(1).to(h.dtype)
        return (h * weights).sum(dim=2) / weights.sum(dim=2).clamp(min=1.0)
