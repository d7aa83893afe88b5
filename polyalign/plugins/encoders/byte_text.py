"""Encoder ``byte_text``: a small transformer over UTF-8 bytes; needs no tokenizer or download."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from polyalign.core.encoder import Encoder
from polyalign.core.layer_groups import named_layer_groups

from .checkpointing import checkpoint_blocks
from .text import TOKEN_AXES, example_texts, pad_token_batch, pool_tokens, read_text

PAD, CLS, OFFSET = 0, 1, 2  # token ids: padding, a leading summary token, then the 256 byte values


class ByteTextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: int = Field(128, ge=8, description="model width (also the encoder's output width)")
    layers: int = Field(2, ge=1, description="transformer layers")
    heads: int = Field(4, ge=1, description="attention heads (must divide dim)")
    ff_dim: int | None = Field(None, ge=1, description="feed-forward width (default 4 * dim)")
    max_length: int = Field(256, ge=2, description="bytes kept per text, plus the summary token")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout inside the transformer layers")
    pooling: Literal["mean", "cls"] = Field("mean", description="mean over tokens, or the summary token")
    grad_checkpointing: bool = Field(False, description="recompute each layer's activations in backward "
                                                        "(less memory for about one more forward)")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> "ByteTextConfig":
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        return self


def encode_bytes(text: str, max_length: int) -> torch.Tensor:
    """Token ids of ``text``: the summary token, then its UTF-8 bytes (truncated)."""
    data = text.encode("utf-8")[: max_length - 1]
    return torch.tensor([CLS, *(b + OFFSET for b in data)], dtype=torch.long)


class ByteTextEncoder(Encoder):
    """Text -> UTF-8 bytes -> pre-norm transformer encoder -> pooled ``(B, dim)``."""

    def __init__(self, config: ByteTextConfig):
        super().__init__()
        self.config = config
        self.width = config.dim
        self.tokens = nn.Embedding(256 + OFFSET, config.dim, padding_idx=PAD)
        self.positions = nn.Embedding(config.max_length, config.dim)
        layer = nn.TransformerEncoderLayer(config.dim, config.heads, config.ff_dim or 4 * config.dim,
                                           config.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        if config.grad_checkpointing:
            checkpoint_blocks(self.transformer.layers)
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)

    def layer_groups(self) -> list[list[str]]:
        """Token and position embeddings, then each transformer layer (the last with the final norm)."""
        return named_layer_groups(self, [[self.tokens, self.positions], *[[b] for b in self.transformer.layers]])

    def load(self, value: Any, root: Path | None) -> dict[str, torch.Tensor]:
        """One text (inline or ``.txt``) -> ``{input_ids, attention_mask}`` 1-D tensors."""
        ids = encode_bytes(read_text(value, root), self.config.max_length)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def collate(self, values: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Pad to the longest text of the batch; padding has ``attention_mask`` 0."""
        return pad_token_batch(values, {"input_ids": PAD})

    export_axes = TOKEN_AXES

    def export_example(self, batch: int) -> dict[str, torch.Tensor]:
        return self.collate([self.load(text, None) for text in example_texts(batch)])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        pos = torch.arange(ids.shape[1], device=ids.device)
        h = self.tokens(ids) + self.positions(pos)[None]
        h = self.norm(self.transformer(h, src_key_padding_mask=~mask.bool()))
        return pool_tokens(h, mask, self.config.pooling)


def build_byte_text(config: ByteTextConfig) -> ByteTextEncoder:
    """Factory for ``byte_text``."""
    return ByteTextEncoder(config)
