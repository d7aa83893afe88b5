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
    (collated batch -> ``(B, width)``) and ``load`` (one raw value from a sample -> tensor or
    dict of tensors). The default ``collate`` stacks tensors (or each key of dicts). Encoders
    with blocks override ``layer_groups`` (for ``unlocked_layers`` and ``train.layer_decay``);
    encoders with training-only structure (LoRA adapters) override ``merge_for_export``.
    """

    width: int

    def layer_groups(self) -> list[list[str]]:
        """This encoder's parameter names (as ``named_parameters()`` gives them) in layers, input first.

        ``unlocked_layers: K`` trains only the last K groups; ``train.layer_decay: d`` multiplies
        the learning rate of group i of n by ``d ** (n - i)`` (the projection head after the
        encoder keeps the full rate), as timm's layer-wise decay does. Each parameter is in exactly
        one group. The default is one group holding every parameter; an encoder with blocks
        returns its stem (embeddings), then one group per block, the last block with the norm
        after it, as timm's ``group_matcher`` and open_clip's ``lock`` count them (e.g. with
        :func:`polyalign.core.layer_groups.named_layer_groups`).
        """
        names = [name for name, _ in self.named_parameters()]
        return [names] if names else []

    def merge_for_export(self) -> dict[str, Any]:
        """Fold training-only structure into the weights, in place, for ``polyalign export``.

        Returns the config options that rebuild the folded encoder from the exported weights alone
        (e.g. ``{"lora": None, "pretrained": False}`` once LoRA adapters are merged: the export
        then loads without peft and without the pretrained file). The default changes nothing.
        """
        return {}

    def train(self, mode: bool = True) -> "Encoder":
        """Set train mode; a batch norm whose weights do not train keeps its running statistics (eval)."""
        super().train(mode)
        if mode:
            for module in self.modules():
                if (isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine
                        and not any(p.requires_grad for p in module.parameters(recurse=False))):
                    module.eval()
        return self

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
