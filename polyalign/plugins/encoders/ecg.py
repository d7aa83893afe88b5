"""Encoder ``ecg``: multi-lead signals (.npy or WFDB) -> per-lead standardisation -> 1-D ResNet."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from polyalign.core.encoder import FILE_VALUES, Encoder, FileBytes, resolve_file
from polyalign.core.errors import PolyalignError
from polyalign.core.layer_groups import named_layer_groups
from polyalign.files.npy_file import read_npy

from .checkpointing import checkpoint_blocks
from .resample import resample

Layout = Literal["auto", "leads_first", "time_first"]


class EcgConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    leads: int = Field(12, ge=1, description="leads per recording")
    length: int | None = Field(None, ge=8, description="samples per lead (crop/zero-pad); default: the data's")
    layout: Layout = Field("auto", description="leads_first = (leads, samples) arrays, time_first = "
                                               "(samples, leads); auto = whichever axis has `leads` entries")
    crop: Literal["start", "center", "random"] = Field(
        "center", description="where a long recording is cut; random = a random window in training")
    sample_rate: int | None = Field(None, ge=1, description="resample WFDB records to this rate (Hz)")
    lead_names: list[str] | None = Field(None, description="WFDB signal names to use, in order (e.g. [I, II, V1])")
    base_width: int = Field(64, ge=1, description="channels of the first ResNet stage (x2 per stage)")
    blocks: list[int] = Field(default_factory=lambda: [2, 2, 2, 2], min_length=1,
                              description="residual blocks per stage ([2, 2, 2, 2] = ResNet-18)")
    kernel_size: int = Field(7, ge=1, description="kernel size of the residual convolutions (odd)")
    grad_checkpointing: bool = Field(False, description="recompute each residual block's activations in "
                                                        "backward (less memory for about one more forward)")


def read_wfdb(path: Path, lead_names: list[str] | None, sample_rate: int | None) -> np.ndarray:
    """A WFDB record as ``(samples, leads)``, optionally only ``lead_names`` and resampled."""
    import wfdb

    record_name = str(path.with_suffix("")) if path.suffix in (".hea", ".dat") else str(path)
    try:
        record = wfdb.rdrecord(record_name)
    except Exception as exc:
        raise PolyalignError(f"cannot read WFDB record {record_name}: {type(exc).__name__}: {exc}") from exc
    signal = record.p_signal
    if signal is None:
        raise PolyalignError(f"WFDB record {record_name} has no physical signal")
    if lead_names is not None:
        missing = [n for n in lead_names if n not in record.sig_name]
        if missing:
            raise PolyalignError(f"WFDB record {record_name} has no lead(s) {', '.join(missing)}; "
                                 f"it has {', '.join(record.sig_name)}")
        signal = signal[:, [record.sig_name.index(n) for n in lead_names]]
    if sample_rate is not None and int(round(record.fs)) != sample_rate:
        wave = torch.from_numpy(np.ascontiguousarray(signal.T, dtype=np.float32))
        signal = resample(wave, int(round(record.fs)), sample_rate).numpy().T
    return np.asarray(signal, dtype=np.float32)


def read_ecg_array(value: Any, root: Path | None, config: EcgConfig) -> np.ndarray:
    """The raw array of a value: a ``.npy`` file, a WFDB record (``.hea``/``.dat``/no suffix) or numbers."""
    if not isinstance(value, FILE_VALUES):
        return np.asarray(value, dtype=np.float32)
    text = str(value)
    if isinstance(value, FileBytes) and not text.endswith(".npy"):
        raise PolyalignError(f"ECG {text}: a recording held in memory (a shard member) must be a .npy array; "
                             f"a WFDB record is two files (.hea + .dat), so convert it to .npy first")
    if text.endswith(".npy"):
        path = resolve_file(value, root, "ECG .npy")
        return read_npy(path, "ECG array").astype(np.float32)
    header = Path(text).with_suffix(".hea") if Path(text).suffix in (".hea", ".dat") else Path(text + ".hea")
    path = resolve_file(str(header), root, "ECG WFDB header (.hea)")
    return read_wfdb(path, config.lead_names, config.sample_rate)


def to_leads_first(arr: np.ndarray, leads: int, layout: Layout, name: str) -> np.ndarray:
    """``arr`` as ``(leads, samples)``, or an error naming the shape that was found."""
    expected = f"({leads}, samples)" if layout != "time_first" else f"(samples, {leads})"
    if arr.ndim != 2:
        raise PolyalignError(f"ECG {name} has shape {tuple(arr.shape)}; expected a 2-D array {expected}. "
                             f"Set the encoder's leads/layout to match your recordings.")
    if layout == "leads_first" or (layout == "auto" and arr.shape[0] == leads):
        out = arr
    elif layout == "time_first" or (layout == "auto" and arr.shape[1] == leads):
        out = arr.T
    else:
        out = arr
    if out.shape[0] != leads:
        raise PolyalignError(f"ECG {name} has shape {tuple(arr.shape)}; expected {expected} "
                             f"({leads} leads{'' if layout == 'auto' else ', layout ' + layout}). "
                             f"Set the encoder's leads/layout to match your recordings.")
    return out


def read_recording(value: Any, root: Path | None, config: EcgConfig) -> np.ndarray:
    """The recording of a value as ``(leads, samples)`` (any length), unstandardised."""
    name = str(value) if isinstance(value, FILE_VALUES) else "value"
    return to_leads_first(read_ecg_array(value, root, config), config.leads, config.layout, name)


def standardize_leads(x: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance per lead; NaNs (gaps) become 0, flat leads stay 0."""
    if np.isfinite(x).all():  # the common case, without the NaN handling below (same result)
        std = x.std(axis=1, keepdims=True)
        return ((x - x.mean(axis=1, keepdims=True)) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(x, axis=1, keepdims=True) if np.isnan(x).any() else x.mean(axis=1, keepdims=True)
        std = np.nanstd(x, axis=1, keepdims=True) if np.isnan(x).any() else x.std(axis=1, keepdims=True)
    out = (x - np.nan_to_num(mean)) / np.where(np.nan_to_num(std) > 1e-8, np.nan_to_num(std), 1.0)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


class BasicBlock1d(nn.Module):
    """Two convolutions with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int):
        super().__init__()
        pad = kernel // 2
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel, stride, pad, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True),
            nn.Conv1d(c_out, c_out, kernel, 1, pad, bias=False), nn.BatchNorm1d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm1d(c_out)))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class ResNet1d(nn.Module):
    """ResNet-18-style 1-D network: stem, stages of basic blocks, global average pooling."""

    def __init__(self, leads: int, base_width: int, blocks: list[int], kernel: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(leads, base_width, 15, 2, 7, bias=False), nn.BatchNorm1d(base_width),
                                  nn.ReLU(inplace=True), nn.MaxPool1d(3, 2, 1))
        stages, c_in = [], base_width
        for i, n in enumerate(blocks):
            c_out = base_width * 2 ** i
            for j in range(n):
                stages.append(BasicBlock1d(c_in, c_out, 2 if (j == 0 and i > 0) else 1, kernel))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.width = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))


class EcgEncoder(Encoder):
    """Recordings -> ``(leads, length)`` standardised per lead -> 1-D ResNet -> ``(B, width)``."""

    def __init__(self, config: EcgConfig, length: int):
        super().__init__()
        self.config = config
        self.length = length
        self.net = ResNet1d(config.leads, config.base_width, config.blocks, config.kernel_size)
        self.width = self.net.width
        if config.grad_checkpointing:
            checkpoint_blocks(self.net.stages)

    def rebuild_options(self) -> dict[str, Any]:
        return {"length": self.length}

    def layer_groups(self) -> list[list[str]]:
        """The stem, then each residual block."""
        return named_layer_groups(self, [[self.net.stem], *[[b] for b in self.net.stages]])

    def load_options(self) -> dict[str, Any]:
        cfg = self.config
        return {"leads": cfg.leads, "length": self.length, "layout": cfg.layout, "crop": cfg.crop,
                "sample_rate": cfg.sample_rate, "lead_names": cfg.lead_names}

    def decode(self, value: Any, root: Path | None) -> torch.Tensor:
        """One recording -> ``(leads, length)``, standardised per lead and cropped or zero-padded;
        with ``crop: random`` the whole recording, which :meth:`finish` cuts at each use."""
        x = torch.from_numpy(np.ascontiguousarray(read_recording(value, root, self.config)))
        return x if self.config.crop == "random" else self._cut(x, self.config.crop)

    def finish(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """The window of a decoded recording (a random one in training with ``crop: random``)."""
        if self.config.crop != "random":
            return x
        return self._cut(x, "random" if train else "center")

    def _cut(self, x: torch.Tensor, crop: str) -> torch.Tensor:
        extra = max(0, x.shape[1] - self.length)
        if crop == "random":
            offset = int(torch.randint(0, extra + 1, ()))
        else:
            offset = 0 if crop == "start" else extra // 2
        window = standardize_leads(x[:, offset: offset + self.length].numpy())
        if window.shape[1] < self.length:
            window = np.pad(window, ((0, 0), (0, self.length - window.shape[1])))
        return torch.from_numpy(np.ascontiguousarray(window))

    def export_example(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, self.config.leads, self.length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_ecg(config: EcgConfig, example: Any = None, root: Path | None = None) -> EcgEncoder:
    """Factory for ``ecg``: ``length`` from the config, else from an example recording."""
    length = config.length
    if length is None:
        if example is None:
            raise PolyalignError("encoder 'ecg' needs length (no example recording to infer it from)")
        length = int(read_recording(example, root, config).shape[1])
    return EcgEncoder(config, length)
