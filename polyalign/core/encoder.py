"""The encoder contract: load one raw value, collate a list, map a batch to (B, width)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from .errors import PluginError

Input = Union[torch.Tensor, dict[str, torch.Tensor]]


class Encoder(nn.Module):
    """Base class for encoder plugins.

    Subclasses set ``width`` (the size of the output features), implement ``forward``
    (collated batch -> ``(B, width)``) and say how one raw value from a sample (a path, a
    :class:`~polyalign.core.data.FileBytes`, a string, numbers) becomes a tensor or dict of
    tensors: either ``load``, or the pair ``decode`` + ``finish``. The default ``collate``
    stacks tensors (or each key of dicts).

    **Decode once, finish on every use.** The input cache (``cache.inputs``) keeps what
    ``decode`` returned and calls ``finish`` on it at each use, so ``decode`` must be
    deterministic (file reading, resampling, tokenising) and everything random belongs in
    ``finish(x, train)`` (train-time augmentation: random crops, flips; and, for ``train=False``,
    whatever must happen after decoding in evaluation, e.g. a centre crop). ``load`` is
    ``finish(decode(value, root), self.training)``. An encoder that overrides ``load`` alone
    is cached as it is: one whose ``load`` draws random numbers must set ``random_load = True``,
    and polyalign then refuses the input cache for it with a message.
    """

    width: int
    random_load: bool = False

    def load(self, value: Any, root: Path | None) -> Input:
        """Turn one raw value (a path relative to ``root``, a string, numbers) into a tensor."""
        if type(self).decode is Encoder.decode:
            raise PluginError(f"encoder {type(self).__name__} defines neither load(value, root) nor "
                              f"decode(value, root)")
        return self.finish(self.decode(value, root), self.training)

    def decode(self, value: Any, root: Path | None) -> Input:
        """The deterministic part of :meth:`load`: what the input cache keeps (default: ``load``)."""
        return self.load(value, root)

    def finish(self, x: Input, train: bool) -> Input:
        """The part of :meth:`load` done at every use of a decoded value (default: nothing)."""
        return x

    def load_options(self) -> dict[str, Any] | None:
        """The options that change what :meth:`decode` returns, for the input cache's key.

        None (the default) keys the cache on every option of the encoder's recipe node, which is
        always safe; return the few that matter so that changing another option (a hidden width)
        keeps the cached inputs.
        """
        return None

    def rebuild_options(self) -> dict[str, Any]:
        """Config options this encoder inferred from its ``example`` (e.g. an input size).

        polyalign writes them into the run's ``recipe.yaml`` so that the model can be rebuilt
        without the training data (``polyalign.load``, ``polyalign export``). Override it when
        the factory infers anything from ``example``; each key must be a field of the
        encoder's config model.
        """
        return {}

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
