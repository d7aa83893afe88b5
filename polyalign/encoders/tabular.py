"""Encoder ``tabular``: numeric rows with missing entries -> value + missingness bit -> MLP.

As in the Symile MIMIC setup, each entry contributes its (standardised) value, with missing
entries replaced by a fill value, and an indicator that is 1 where the entry was measured.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from polyalign.core.encoder import FILE_VALUES, Encoder, resolve_file
from polyalign.core.errors import PolyalignError
from polyalign.core.json_file import read_json
from polyalign.core.npy_file import read_npy


class TabularConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    columns: list[str] | None = Field(None, min_length=1, description="column names (for rows given as "
                                      "{column: value}); default: the keys of an example row")
    dim: int | None = Field(None, ge=1, description="entries per row (for rows given as lists); default: the data's")
    mean: list[float] | None = Field(None, description="per-column mean to standardise with (e.g. train statistics)")
    std: list[float] | None = Field(None, description="per-column std to standardise with")
    fill: float = Field(0.0, description="value used for a missing entry (after standardisation)")
    indicators: bool = Field(True, description="append one missingness bit per column")
    hidden: list[int] = Field(default_factory=lambda: [128, 128], description="MLP hidden widths; [] = none")
    dropout: float = Field(0.0, ge=0, lt=1)


def is_missing(entry: Any) -> bool:
    """None, NaN or an empty string."""
    if entry is None or (isinstance(entry, str) and not entry.strip()):
        return True
    return isinstance(entry, float) and math.isnan(entry)


def read_row(value: Any, root: Path | None) -> Any:
    """A row as a list or dict: inline, or from a ``.npy``/``.json`` file (or shard member)."""
    if isinstance(value, FILE_VALUES):
        text = str(value)
        if text.endswith(".npy"):
            path = resolve_file(value, root, "tabular .npy")
            return read_npy(path, "table row").astype(np.float64).reshape(-1).tolist()
        if text.endswith(".json"):
            path = resolve_file(value, root, "tabular .json")
            return read_json(path, "table row", max_bytes=16 << 20)
        raise PolyalignError(f"a tabular value must be numbers (a list, or a {{column: value}} mapping) "
                             f"or a .npy/.json file; got the string {text!r}")
    if isinstance(value, np.ndarray):
        return value.astype(np.float64).reshape(-1).tolist()
    return value


class TabularEncoder(Encoder):
    """Rows of ``n`` entries -> ``[values, indicators]`` (2n) -> MLP -> ``(B, width)``."""

    def __init__(self, config: TabularConfig, columns: list[str] | None, n: int):
        super().__init__()
        self.config = config
        self.columns = columns
        self.n = n
        for name in ("mean", "std"):
            stats = getattr(config, name)
            if stats is not None and len(stats) != n:
                raise PolyalignError(f"encoder 'tabular': {name} has {len(stats)} values for {n} columns")
        if config.std is not None and any(s <= 0 for s in config.std):
            raise PolyalignError(f"encoder 'tabular': std values must be positive, got {config.std}")
        self.offset = np.asarray(config.mean if config.mean is not None else [0.0] * n, dtype=np.float64)
        self.scale = np.asarray(config.std if config.std is not None else [1.0] * n, dtype=np.float64)
        width = 2 * n if config.indicators else n
        layers: list[nn.Module] = []
        for a, b in zip([width, *config.hidden][:-1], config.hidden):
            layers += [nn.Linear(a, b), nn.GELU()] + ([nn.Dropout(config.dropout)] if config.dropout else [])
        self.net = nn.Sequential(*layers)
        self.width = config.hidden[-1] if config.hidden else width

    def rebuild_options(self) -> dict[str, Any]:
        return {"columns": self.columns} if self.columns is not None else {"dim": self.n}

    def entries(self, row: Any) -> list[Any]:
        """The ``n`` entries of a row (list in column order, or a mapping by column name)."""
        if isinstance(row, dict):
            if self.columns is None:
                raise PolyalignError("this row is a {column: value} mapping, but the encoder has no "
                                     "column names; set columns in the recipe")
            unknown = [k for k in row if k not in self.columns]
            if unknown:
                raise PolyalignError(f"unknown column(s) {', '.join(map(repr, unknown))}; the encoder's "
                                     f"columns are {', '.join(self.columns)}")
            return [row.get(c) for c in self.columns]
        if not isinstance(row, (list, tuple)):
            raise PolyalignError(f"a tabular row must be a list or a mapping, got {type(row).__name__}")
        if len(row) != self.n:
            raise PolyalignError(f"expected a row of {self.n} entries, got {len(row)}")
        return list(row)

    def load(self, value: Any, root: Path | None) -> torch.Tensor:
        """One row -> ``(2n,)``: standardised values with ``fill`` where missing, then indicators."""
        entries = self.entries(read_row(value, root))
        seen = np.array([not is_missing(e) for e in entries])
        try:
            raw = np.array([float(e) if ok else 0.0 for e, ok in zip(entries, seen)], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise PolyalignError(f"a tabular entry is not a number: {exc}") from exc
        values = np.where(seen, (raw - self.offset) / self.scale, self.config.fill)
        parts = [values, seen.astype(np.float64)] if self.config.indicators else [values]
        return torch.from_numpy(np.concatenate(parts).astype(np.float32))

    def export_example(self, batch: int) -> torch.Tensor:
        values = torch.randn(batch, self.n)
        return torch.cat([values, torch.ones(batch, self.n)], 1) if self.config.indicators else values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_tabular(config: TabularConfig, example: Any = None, root: Path | None = None) -> TabularEncoder:
    """Factory for ``tabular``: columns/width from the config, else from an example row."""
    columns, n = config.columns, config.dim
    if columns is not None:
        if n is not None and n != len(columns):
            raise PolyalignError(f"encoder 'tabular': dim {n} disagrees with the {len(columns)} columns")
        return TabularEncoder(config, columns, len(columns))
    if n is not None:
        return TabularEncoder(config, None, n)
    if example is None:
        raise PolyalignError("encoder 'tabular' needs columns or dim (no example row to infer them from)")
    row = read_row(example, root)
    if isinstance(row, dict):
        return TabularEncoder(config, list(row), len(row))
    if not isinstance(row, (list, tuple)):
        raise PolyalignError(f"encoder 'tabular': the example row is a {type(row).__name__}, not a list or mapping")
    return TabularEncoder(config, None, len(row))
