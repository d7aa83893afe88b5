"""Batch: per-modality inputs plus ``present`` masks; collation with missing values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .encoder import Input, to_device


@dataclass
class Batch:
    """A collated batch.

    ``inputs[m]`` has a row for every sample (a zero placeholder where the modality is
    missing); ``present[m][i]`` says whether sample i really has modality m. A modality that
    no sample of the batch has is left out of ``inputs`` (its mask is all False).
    """

    inputs: dict[str, Input]
    present: dict[str, torch.Tensor]
    index: torch.Tensor
    label: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        """This batch on ``device``."""
        return Batch({m: to_device(x, device, non_blocking) for m, x in self.inputs.items()},
                     {m: p.to(device, non_blocking=non_blocking) for m, p in self.present.items()},
                     self.index.to(device, non_blocking=non_blocking),
                     None if self.label is None else self.label.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """Pinned copy (DataLoader calls this when ``pin_memory`` is on)."""
        pin = lambda x: {k: v.pin_memory() for k, v in x.items()} if isinstance(x, dict) else x.pin_memory()  # noqa: E731
        return Batch({m: pin(x) for m, x in self.inputs.items()},
                     {m: p.pin_memory() for m, p in self.present.items()},
                     self.index.pin_memory(),
                     None if self.label is None else self.label.pin_memory())


def _scatter(collated: Input, rows: torch.Tensor, size: int) -> Input:
    """Place ``collated`` (one row per present sample) at ``rows`` of a zero tensor of ``size`` rows."""
    if isinstance(collated, dict):
        return {k: _scatter(v, rows, size) for k, v in collated.items()}
    full = collated.new_zeros((size, *collated.shape[1:]))
    full[rows] = collated
    return full


@dataclass
class LoadedColumns:
    """A batch loaded column by column: per modality, the batch rows that have it and their
    collated input (what :meth:`TupleDataset.__getitems__` returns on its fast path)."""

    index: list[int]
    columns: dict[str, tuple[list[int], Input]]
    labels: list[Any]


class Collator:
    """Collates loaded samples ``(index, {modality: value}, label)``, or a whole
    :class:`LoadedColumns`, into a :class:`Batch`."""

    def __init__(self, collate_fns: dict[str, Callable[[list[Input]], Input]]):
        self.collate_fns = collate_fns

    def columns(self, items: list[tuple[int, dict[str, Input], Any]]) -> LoadedColumns:
        """Per-row loaded samples regrouped (and collated) per modality."""
        columns = {}
        for m, collate in self.collate_fns.items():
            rows = [i for i, (_, values, _) in enumerate(items) if m in values]
            if rows:
                columns[m] = (rows, collate([items[i][1][m] for i in rows]))
        return LoadedColumns([idx for idx, _, _ in items], columns, [lab for _, _, lab in items])

    def __call__(self, items: list[tuple[int, dict[str, Input], Any]] | LoadedColumns) -> Batch:
        loaded = items if isinstance(items, LoadedColumns) else self.columns(items)
        size = len(loaded.index)
        inputs: dict[str, Input] = {}
        present: dict[str, torch.Tensor] = {}
        for m in self.collate_fns:
            present[m] = torch.zeros(size, dtype=torch.bool)
            if m in loaded.columns:
                rows, collated = loaded.columns[m]
                if len(rows) == size:  # the common case: no holes, nothing to scatter
                    present[m][:] = True
                    inputs[m] = collated
                    continue
                rows_t = torch.tensor(rows)
                present[m][rows_t] = True
                inputs[m] = _scatter(collated, rows_t, size)
        labels = loaded.labels
        label = (torch.tensor(labels) if all(isinstance(lab, int) for lab in labels) else None)
        return Batch(inputs, present, torch.tensor(loaded.index), label)
