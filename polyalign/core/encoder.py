"""The encoder contract: decode one raw value, collate a list, map a batch to (B, width); and
the helpers encoder plugins share (a value naming a file or holding one, padding to a batch
with a mask)."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Union

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from polyalign.files.held_file import FileBytes

from .errors import PluginError, PolyalignError, not_a_file, shown

Input = Union[torch.Tensor, dict[str, torch.Tensor]]


class Encoder(nn.Module):
    """Base class for encoder plugins.

    Subclasses set ``width`` (the size of the output features), implement ``forward``
    (collated batch -> ``(B, width)``) and ``decode(value, root)``: how one raw value from a sample
    (a :class:`~pathlib.Path` or :class:`FileBytes` naming or holding a file, a ``str`` of text,
    numbers) becomes a tensor or dict of tensors. ``finish(x, train)`` is optional (default: ``x``
    as it is). The default ``collate`` stacks tensors (or each key of dicts); values of different
    lengths need :func:`pad_with_mask`, and values naming files :func:`resolve_file`.

    **Decode once, finish on every use.** ``load(value, root)`` is ``finish(decode(value, root),
    self.training)``, derived and never overridden. The input cache (``cache.inputs``) keeps what
    ``decode`` returned and calls ``finish`` on it at each use, so ``decode`` must be deterministic
    (file reading, resampling, tokenising) and everything random belongs in ``finish(x, train)``
    (train-time augmentation: random crops, flips; and, for ``train=False``, whatever must happen
    after decoding in evaluation, e.g. a centre crop). An encoder whose ``decode`` cannot help
    drawing random numbers sets ``random_decode = True``, and polyalign then refuses the input
    cache for it with a message.

    Encoders with blocks override ``layer_groups`` (for ``unlocked_layers`` and
    ``train.layer_decay``); encoders with training-only structure (LoRA adapters) override
    ``merge_for_export``.
    For ONNX export they implement ``export_example`` and, when an input has a variable axis
    besides the batch (tokens), name it in ``export_axes``.
    """

    width: int
    random_decode: bool = False
    export_axes: ClassVar[dict[str, dict[int, str]]] = {}
    """Variable axes besides the batch, by input name (``input`` for a plain tensor), e.g.
    ``{"input_ids": {1: "length"}}``; axes with the same name must have the same size."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "load" in cls.__dict__:
            raise PluginError(f"encoder {cls.__qualname__} overrides load(value, root), which is finish(decode(value, "
                              f"root), training) for every encoder: define decode(value, root) (deterministic) and, "
                              f"for augmentation, finish(x, train) instead")

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

    def decode(self, value: Any, root: Path | None) -> Input:
        """One raw value (a file relative to ``root``, a string of text, numbers) -> a tensor or dict of
        tensors: the deterministic part of loading, which the input cache keeps."""
        raise PluginError(f"encoder {type(self).__name__} defines no decode(value, root): define it to turn one raw "
                          f"value into a tensor (docs/writing-a-plugin.md, the encoder section)")

    def finish(self, x: Input, train: bool) -> Input:
        """What is done at every use of a decoded value (train-time augmentation); the default keeps ``x``."""
        return x

    def load(self, value: Any, root: Path | None) -> Input:
        """One raw value, decoded and finished for this encoder's mode: ``finish(decode(value, root), training)``."""
        return self.finish(self.decode(value, root), self.training)

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
        ``__init__`` infers anything from ``example``; each key must be a field of the
        encoder's config model.
        """
        return {}

    def fit(self, values: Iterator[Any], root: Path | None) -> None:
        """Take statistics from the train split before training (e.g. ``tabular``'s ``mean: auto``).

        ``values`` are the raw values of this encoder's modality in the train split (its first
        rows for a streamed split); the default ignores them. An encoder that computes options
        here returns them from :meth:`rebuild_options`, so the run's ``recipe.yaml`` and an
        export hold the numbers, not ``auto``; an encoder built with those numbers needs no fit.
        """

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


def encoder_width(encoder: Any, plugin: str) -> int:
    """The ``width`` an encoder declares, or a :class:`PluginError` naming ``plugin`` and what is wrong."""
    if not isinstance(encoder, nn.Module):
        raise PluginError(f"{plugin}: it built a {type(encoder).__name__}, not an encoder; an encoder class must "
                          f"be an nn.Module (subclass polyalign.plugin.Encoder)")
    declared = getattr(encoder, "width", None)
    if declared is None:
        raise PluginError(f"{plugin}: {type(encoder).__name__} has no attribute `width`; set self.width to the "
                          f"size of its output features (forward returns (batch, width)) in __init__")
    try:
        width = operator.index(declared)
    except TypeError:
        width = 0
    if width < 1:
        raise PluginError(f"{plugin}: {type(encoder).__name__}.width is {declared!r}; it must be a positive int "
                          f"(the size of the output features)")
    return width


FILE_VALUES = (Path, FileBytes)  # raw values that name (or hold) a file; a str is text, never a path


def resolve_file(value: Any, root: Path | None, what: str) -> Path | FileBytes:
    """The existing file a :class:`~pathlib.Path` names (relative paths resolve against ``root``), or
    the file itself when the value holds it in memory (a shard member, an upload); both read alike
    (``open("rb")``, ``read_bytes()``, ``read_text()``, ``suffix``). ``what`` names the kind of file
    in the "not found" error (e.g. ``"IMU recording"``)."""
    if isinstance(value, FileBytes):
        return value
    if isinstance(value, str):
        raise PolyalignError(f"expected {what} file, got the text {shown(value)}: a str is text, never a path. A "
                             f"manifest cell is a file when that file exists (relative to the dataset's folder), "
                             f"so check that it does; in Python, pass pathlib.Path({shown(value)})")
    if not isinstance(value, Path) or not str(value).strip():
        raise PolyalignError(f"expected {what} file (a pathlib.Path), got {type(value).__name__} {shown(value)}")
    try:
        path = value.expanduser()
    except RuntimeError:  # ~user of a user this machine does not have: the path as written (not found below)
        path = value
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    if not path.is_file():
        where = f" (relative paths resolve against {root})" if root is not None else ""
        if path.exists():
            raise PolyalignError(f"{what} file: {not_a_file(path)}{where}")
        raise PolyalignError(f"{what} file not found: {path}{where}")
    return path


def pad_with_mask(values: list[torch.Tensor], pad_value: float = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors of different lengths (first dimension) padded to the longest: ``(B, L, ...)``, and a
    bool ``(B, L)`` mask that is True on real entries."""
    if not values:
        raise PolyalignError("pad_with_mask needs at least one tensor")
    trailing = {tuple(v.shape[1:]) for v in values}
    if len(trailing) > 1 or any(v.dim() == 0 for v in values):
        shapes = ", ".join(str(tuple(v.shape)) for v in values[:5])
        raise PolyalignError(f"pad_with_mask pads the first dimension only; the other dimensions must agree, got "
                             f"shapes {shapes}")
    lengths = torch.tensor([v.shape[0] for v in values])
    padded = pad_sequence(values, batch_first=True, padding_value=pad_value)
    return padded, torch.arange(padded.shape[1])[None, :] < lengths[:, None]


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
