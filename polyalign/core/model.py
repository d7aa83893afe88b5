"""MultiModalModel: per-modality encoder + projection + normalisation; dict in, dict out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import describe_value
from .encoder import Encoder, Input, batch_size_of, encoder_width, select_rows, to_device
from .errors import PluginError, PolyalignError

Normalize = Literal["l2", "layernorm", "none"]
MissingStrategy = Literal["drop", "learned"]
HeadKind = Literal["linear", "none", "mlp"]


def make_head(kind: HeadKind, width: int, embed_dim: int, where: str) -> nn.Module:
    """The head from an encoder's ``width`` features to ``embed_dim``: a linear map, none (the
    encoder's output as it is: its width must be ``embed_dim``), or an MLP (linear, GELU, linear)."""
    if kind == "linear":
        return nn.Linear(width, embed_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, embed_dim))
    if width != embed_dim:
        raise PolyalignError(f"{where}: head none needs the encoder's output width to be model.embed_dim, but it "
                             f"is {width} and embed_dim is {embed_dim}; set model.embed_dim: {width}, or a head "
                             f"that maps to embed_dim (linear or mlp)")
    return nn.Identity()


def load_value(encoder: Encoder, modality: str, value: Any, root: Path | None, index: int) -> Input:
    """``encoder.load(value, root)``, an error naming the modality, the value and its position."""
    try:
        return encoder.load(value, root)
    except PolyalignError as exc:
        raise PolyalignError(f"modality {modality!r}, value {index} ({describe_value(value)}): {exc}") from exc
    except Exception as exc:
        raise PolyalignError(f"modality {modality!r}, value {index} ({describe_value(value)}): "
                             f"{type(exc).__name__}: {exc}") from exc


class MultiModalModel(nn.Module):
    """Encoders keyed by modality, each followed by a head to ``embed_dim`` (``heads``: linear
    by default, mlp, or none where the encoder already ends in ``embed_dim``).

    ``forward(inputs, present)`` embeds the modalities in ``inputs``. Rows whose ``present``
    flag is False are not encoded: with ``missing="learned"`` they get a learned per-modality
    embedding, with ``missing="drop"`` a zero row (the loss then masks them out).
    The inputs of the modalities in ``feature_inputs`` are their encoder's output already
    (``(B, width)`` features from the feature cache): only the head runs on them.

    ``spaces`` > 1 (a list of losses, one embedding space per scoring term): the head maps to
    ``spaces`` blocks of ``embed_dim`` and each block is normalised on its own; the embedding is
    their concatenation, ``(B, spaces · embed_dim)`` (``self.embed_dim`` is that total width,
    ``self.space_dim`` the width of one block), and :class:`~polyalign.core.loss.WeightedLoss`
    gives each term its block. Every encoder is shared by the terms; only the heads' outputs differ.
    """

    def __init__(self, encoders: dict[str, Encoder], embed_dim: int,
                 normalize: Normalize = "l2", missing: MissingStrategy = "drop",
                 plugin_names: dict[str, str] | None = None, heads: dict[str, HeadKind] | None = None,
                 spaces: int = 1):
        super().__init__()
        if spaces < 1:
            raise PolyalignError(f"spaces must be at least 1, got {spaces}")
        self.spaces = spaces
        self.space_dim = embed_dim
        embed_dim = embed_dim * spaces
        self.embed_dim = embed_dim
        self.normalize = normalize
        self.missing = missing
        self.plugin_names = dict(plugin_names or {})
        self.feature_inputs: frozenset[str] = frozenset()
        widths = {m: encoder_width(e, f"encoder plugin {self.plugin_names.get(m, '?')!r} (modality {m!r})")
                  for m, e in encoders.items()}
        self.encoders = nn.ModuleDict(encoders)
        self.heads = nn.ModuleDict({m: make_head((heads or {}).get(m, "linear"), widths[m], embed_dim,
                                                 f"model.head of modality {m!r}") for m in encoders})
        self.norms = nn.ModuleDict({m: nn.LayerNorm(self.space_dim) for m in encoders}
                                   if normalize == "layernorm" else {})
        self.missing_embeddings = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(embed_dim) * 0.02) for m in encoders}
            if missing == "learned" else {})
        # the dtype and device of placeholder rows (heads may hold no parameter); a plain tensor also under FSDP
        self.register_buffer("reference", torch.zeros(0), persistent=False)

    @property
    def modalities(self) -> list[str]:
        """Modality names in recipe order."""
        return list(self.encoders.keys())

    def _post(self, m: str, h: torch.Tensor) -> torch.Tensor:
        if self.normalize == "none":
            return h
        if self.spaces > 1:  # each term's block on its own
            blocks = h.unflatten(-1, (self.spaces, self.space_dim))
            blocks = F.normalize(blocks, dim=-1) if self.normalize == "l2" else self.norms[m](blocks)
            return blocks.flatten(-2)
        if self.normalize == "l2":
            return F.normalize(h, dim=-1)
        return self.norms[m](h)

    def encode(self, m: str, x: Input) -> torch.Tensor:
        """Embed a batch of modality ``m`` (every row present) -> ``(B, embed_dim)``."""
        n = batch_size_of(x)
        feats = x if m in self.feature_inputs else self.encoders[m](x)
        width = int(self.encoders[m].width)
        if (not isinstance(feats, torch.Tensor) or feats.dim() != 2 or tuple(feats.shape) != (n, width)
                or not feats.is_floating_point()):
            got = (f"{tuple(feats.shape)} {feats.dtype}" if isinstance(feats, torch.Tensor)
                   else type(feats).__name__)
            raise PluginError(
                f"encoder plugin {self.plugin_names.get(m, '?')!r} (modality {m!r}) returned {got} "
                f"for a batch of {n}; it must return a floating (batch, width) tensor with width "
                f"{width}.")
        return self._post(m, self.heads[m](feats))

    @torch.no_grad()
    def embed_values(self, m: str, values: Sequence[Any], root: Path | None, device: torch.device,
                     batch_size: int = 256) -> torch.Tensor:
        """Raw values of modality ``m`` (paths relative to ``root``, text, numbers), loaded by its
        encoder and embedded ``batch_size`` at a time in eval mode -> ``(N, embed_dim)`` on ``device``."""
        encoder = self.encoders[m]
        was_training = self.training
        # switching walks every module (two thirds of a small model's embed call): only when it trains
        switch = was_training or any(e.training for e in self.encoders.values())
        if switch:
            self.eval()
        try:
            chunks = [self.encode(m, to_device(encoder.collate(
                [load_value(encoder, m, v, root, start + i) for i, v in enumerate(values[start:start + batch_size])]),
                device)) for start in range(0, len(values), batch_size)]
        finally:
            if switch:
                self.train(was_training)
        return torch.cat(chunks) if chunks else torch.empty(0, self.embed_dim, device=device)

    @torch.no_grad()
    def with_placeholders(self, queries: dict[str, torch.Tensor], skip: Sequence[str]) -> dict[str, torch.Tensor]:
        """``queries`` plus, with learned placeholders (``missing="learned"``), the placeholder of
        every other modality not in ``skip`` (the candidates), as training saw absent ones."""
        if self.missing != "learned":
            return queries
        first = next(iter(queries.values()))
        out = dict(queries)
        for m in self.modalities:
            if m not in skip and m not in out:
                out[m] = self.missing_rows(m, int(first.shape[0]), first).to(first.device, first.dtype)
        return out

    def missing_rows(self, m: str, n: int, like: torch.Tensor) -> torch.Tensor:
        """Embeddings for ``n`` rows where ``m`` is absent (learned or zeros)."""
        if self.missing == "learned":
            return self._post(m, self.missing_embeddings[m].to(like.dtype)).expand(n, -1)
        return like.new_zeros(n, self.embed_dim)

    def forward(self, inputs: dict[str, Input],
                present: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Embed every modality of the model present in ``inputs`` or ``present``."""
        present = present or {}
        names = [m for m in self.modalities if m in inputs or m in present]
        out: dict[str, torch.Tensor] = {}
        n = next(batch_size_of(x) for x in inputs.values()) if inputs else next(
            int(p.shape[0]) for p in present.values())
        ref = self.reference
        for m in names:
            mask = present.get(m)
            if m not in inputs:
                out[m] = self.missing_rows(m, n, ref)
                continue
            if mask is None or bool(mask.all()):
                out[m] = self.encode(m, inputs[m])
                continue
            rows = mask.nonzero(as_tuple=True)[0]
            emb = self.missing_rows(m, n, ref).clone()
            if rows.numel():
                z = self.encode(m, select_rows(inputs[m], rows))
                emb = emb.to(z.dtype).index_copy(0, rows, z)
            out[m] = emb
        return out

    def loss_present(self, present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """The masks a loss should see: none with learned placeholders, else ``present``."""
        return None if self.missing == "learned" else present
