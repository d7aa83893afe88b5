"""The encoder contract: load one raw value, collate a list, map a batch to (B, width)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Union

import torch
from torch import nn

from .errors import PluginError

Input = Union[torch.Tensor, dict[str, torch.Tensor]]


class Encoder(nn.Module):
    """Base class for encoder plugins.

    Subclasses set ``width`` (the size of the output features), implement ``forward``
    (collated batch -> ``(B, width)``) and ``load`` (one raw value from a sample -> tensor or
    dict of tensors). The default ``collate`` stacks tensors (or each key of dicts). For ONNX
    export they implement ``export_example`` and, when an input has a variable axis besides the
    batch (tokens), name it in ``export_axes``.
    """

    width: int
    export_axes: ClassVar[dict[str, dict[int, str]]] = {}
    """Variable axes besides the batch, by input name (``input`` for a plain tensor), e.g.
    ``{"input_ids": {1: "length"}}``; axes with the same name must have the same size."""

    def load(self, value: Any, root: Path | None) -> Input:
        """Turn one raw value (a path relative to ``root``, a string, numbers) into a tensor."""
        raise PluginError(f"encoder {type(self).__name__} does not define load(value, root)")

    def rebuild_options(self) -> dict[str, Any]:
        """Config options this encoder inferred from its ``example`` (e.g. an input size).

        polyalign writes them into the run's ``recipe.yaml`` so that the model can be rebuilt
        without the training data (``polyalign.load``, ``polyalign export``). Override it when
        the factory infers anything from ``example``; each key must be a field of the
        encoder's config model.
        """
        return {}

    def export_example(self, batch: int) -> Input | None:
        """A synthetic collated batch of ``batch`` inputs, in the form ``forward`` takes (what
        ``load`` and ``collate`` make of real values), to trace the encoder into ONNX
        (``polyalign export --format onnx``). None, the default, says the encoder cannot be
        exported; everything ``load`` does stays outside the exported graph."""
        return None

    def load_batch(self, values: list[Any], root: Path | None) -> Input:
        """Load and collate several raw values at once; override with a vectorised version when
        loading one value at a time is the bottleneck (any error makes the caller retry row by
        row, so messages still name the failing row)."""
        return self.collate([self.load(v, root) for v in values])

    def collate(self, values: list[Input]) -> Input:
        """Stack loaded values into one batch input."""
        first = values[0]
        if isinstance(first, dict):
            return {k: torch.stack([v[k] for v in values]) for k in first}
        return torch.stack(values)


def batch_size_of(x: Input) -> int:
    """Rows in a collated input."""
    return next(iter(x.values())).shape[0] if isinstance(x, dict) else x.shape[0]


def select_rows(x: Input, rows: torch.Tensor) -> Input:
    """The given rows (index or bool mask) of a collated input."""
    if isinstance(x, dict):
        return {k: v[rows] for k, v in x.items()}
    return x[rows]


def to_device(x: Input, device: torch.device, non_blocking: bool = False) -> Input:
    """Move a collated input to ``device``."""
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=non_blocking) for k, v in x.items()}
    return x.to(device, non_blocking=non_blocking)
