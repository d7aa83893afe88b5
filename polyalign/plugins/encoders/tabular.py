"""Encoder ``tabular``: numeric rows with missing entries -> value + missingness bit -> MLP.

As in the Symile MIMIC setup, each entry contributes its (standardised) value, with missing
entries replaced by a fill value, and an indicator that is 1 where the entry was measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from polyalign.core.encoder import FILE_VALUES, Encoder, resolve_file
from polyalign.core.errors import PolyalignError
from polyalign.files.json_file import read_json
from polyalign.files.npy_file import read_npy


class TabularConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    columns: list[str] | None = Field(None, min_length=1, description="column names (for rows given as "
                                      "{column: value}); default: the keys of an example row")
    dim: int | None = Field(None, ge=1, description="entries per row (for rows given as lists); default: the data's")
    mean: list[float] | Literal["auto"] | None = Field(
        None, description="per-column mean to standardise with; auto = the train split's (recorded in the run's "
                          "recipe.yaml); default: 0")
    std: list[float] | Literal["auto"] | None = Field(
        None, description="per-column std to standardise with; auto = the train split's (1 for a constant or "
                          "never measured column); default: 1")
    fill: float = Field(0.0, description="value used for a missing entry (after standardisation)")
    indicators: bool = Field(True, description="append one missingness bit per column")
    hidden: list[int] = Field(default_factory=lambda: [128, 128], description="MLP hidden widths; [] = none")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer")


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
            if isinstance(stats, list) and len(stats) != n:
                raise PolyalignError(f"encoder 'tabular': {name} has {len(stats)} values for {n} columns")
        if isinstance(config.std, list) and any(s <= 0 for s in config.std):
            raise PolyalignError(f"encoder 'tabular': std values must be positive, got {config.std}")
        self.offset = np.asarray(config.mean if isinstance(config.mean, list) else [0.0] * n, dtype=np.float64)
        self.scale = np.asarray(config.std if isinstance(config.std, list) else [1.0] * n, dtype=np.float64)
        self.unfitted = [name for name in ("mean", "std") if getattr(config, name) == "auto"]
        self.fitted: dict[str, list[float]] = {}
        width = 2 * n if config.indicators else n
        layers: list[nn.Module] = []
        for a, b in zip([width, *config.hidden][:-1], config.hidden):
            layers += [nn.Linear(a, b), nn.GELU()] + ([nn.Dropout(config.dropout)] if config.dropout else [])
        self.net = nn.Sequential(*layers)
        self.width = config.hidden[-1] if config.hidden else width

    def rebuild_options(self) -> dict[str, Any]:
        shape = {"columns": self.columns} if self.columns is not None else {"dim": self.n}
        return {**shape, **self.fitted}

    def fit(self, values: Iterator[Any], root: Path | None) -> None:
        """``mean``/``std: auto``: each column's mean and (population) std over the train rows
        that measured it; a column never measured gets mean 0, a constant one std 1."""
        if not self.unfitted:
            return
        mean, m2, count = np.zeros(self.n), np.zeros(self.n), np.zeros(self.n)
        for value in values:  # Welford's running mean and sum of squared deviations, per column
            seen, raw = self.measured(value, root)
            count += seen
            delta = np.where(seen, raw - mean, 0.0)
            mean += np.divide(delta, count, out=np.zeros(self.n), where=seen)
            m2 += np.where(seen, delta * (raw - mean), 0.0)
        std = np.sqrt(np.divide(m2, count, out=np.zeros(self.n), where=count > 0))
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        if "mean" in self.unfitted:
            self.offset = mean
            self.fitted["mean"] = [float(x) for x in mean]
        if "std" in self.unfitted:
            self.scale = std
            self.fitted["std"] = [float(x) for x in std]
        self.unfitted = []

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

    def measured(self, value: Any, root: Path | None) -> tuple[np.ndarray, np.ndarray]:
        """One row's ``(seen, raw)``: which entries are present, and their values as float64 (0 where missing)."""
        entries = self.entries(read_row(value, root))
        seen = np.array([not is_missing(e) for e in entries])
        try:
            raw = np.array([float(e) if ok else 0.0 for e, ok in zip(entries, seen)], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise PolyalignError(f"a tabular entry is not a number: {exc}") from exc
        return seen, raw

    def load(self, value: Any, root: Path | None) -> torch.Tensor:
        """One row -> ``(2n,)``: standardised values with ``fill`` where missing, then indicators."""
        if self.unfitted:
            raise PolyalignError(f"encoder 'tabular': {' and '.join(self.unfitted)}: auto needs the train split's "
                                 f"statistics, which are computed when a run assembles the recipe with its data; "
                                 f"give the numbers (a run's recipe.yaml holds them) to use the encoder without it")
        seen, raw = self.measured(value, root)
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
