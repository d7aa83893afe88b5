"""Encoder ``imu``: accelerometer recordings (CSV or .npy) of any length -> 1-D CNN -> features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from polyalign.core.encoder import Encoder
from polyalign.core.errors import PolyalignError


class ImuConfig(BaseModel):
    """Options a recipe can set under ``encoder: {plugin: imu, ...}``."""

    model_config = ConfigDict(extra="forbid")
    axes: int = Field(3, ge=1, description="columns per sample (3 = x, y, z)")
    max_length: int = Field(1000, ge=8, description="samples kept per recording (longer ones are cut)")
    hidden: int = Field(64, ge=4, description="channels of the convolutions (= the output width)")
    layers: int = Field(3, ge=1, description="convolution layers, each halving the time resolution")


def read_recording(value: Any, root: Path | None) -> np.ndarray:
    """A ``(samples, axes)`` array from a ``.csv`` (one header row) or ``.npy`` file."""
    path = Path(root or ".") / str(value)
    if not path.is_file():
        raise PolyalignError(f"IMU file not found: {path}")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False).astype(np.float32)
        return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise PolyalignError(f"cannot read IMU recording {path}: {exc}") from exc


class ImuEncoder(Encoder):
    """Recordings -> ``{signal (B, T, axes), mask (B, T)}`` -> convolutions -> masked mean ``(B, hidden)``."""

    def __init__(self, config: ImuConfig):
        super().__init__()
        self.config = config
        self.width = config.hidden  # the core adds a projection from `width` to the embedding size
        layers: list[nn.Module] = []
        channels = config.axes
        for _ in range(config.layers):
            layers += [nn.Conv1d(channels, config.hidden, 5, stride=2, padding=2), nn.GELU()]
            channels = config.hidden
        self.net = nn.Sequential(*layers)

    def load(self, value: Any, root: Path | None) -> torch.Tensor:
        """One recording -> ``(samples, axes)``, each axis minus its mean (removes gravity)."""
        x = read_recording(value, root)
        if x.ndim != 2 or x.shape[1] != self.config.axes:
            raise PolyalignError(f"IMU recording {value} has shape {x.shape}; expected (samples, "
                                 f"{self.config.axes})")
        x = x[: self.config.max_length]
        return torch.from_numpy(x - x.mean(axis=0, keepdims=True))

    def collate(self, values: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pad to the longest recording; ``mask`` is 1 on real samples."""
        longest = max(v.shape[0] for v in values)
        signal = torch.zeros(len(values), longest, self.config.axes)
        mask = torch.zeros(len(values), longest)
        for i, v in enumerate(values):
            signal[i, : v.shape[0]] = v
            mask[i, : v.shape[0]] = 1.0
        return {"signal": signal, "mask": mask}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.net(batch["signal"].transpose(1, 2))  # (B, hidden, T')
        # the mask at the convolutions' resolution: a position is real if its window starts on a real sample
        mask = batch["mask"][:, :: 2 ** self.config.layers][:, : h.shape[2]].unsqueeze(1)
        return (h * mask).sum(dim=2) / mask.sum(dim=2).clamp(min=1.0)


def build_imu(config: ImuConfig) -> ImuEncoder:
    """Factory polyalign calls with the validated config."""
    return ImuEncoder(config)
