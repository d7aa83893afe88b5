"""Encoder ``open_clip``: the image or the text tower of an open_clip CLIP model, from local files only."""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from polyalign.core.encoder import Encoder
from polyalign.core.errors import PolyalignError
from polyalign.core.layer_groups import named_layer_groups
from polyalign.files.json_file import JsonError, read_json

from .image import read_image, timm_layer_groups
from .lora import LoraOptions, add_lora, base_network, check_not_frozen, lora_requirements, merge_lora
from .pretrained import local_weights_file, refuse_download
from .text import example_texts, read_text

CONFIG_FILE = "open_clip_config.json"  # open_clip's model folder: this file beside the weights
WEIGHTS_FILE = "open_clip_model.safetensors"
# parts before the first block, in open_clip's VisionTransformer, TextTransformer and ModifiedResNet
STEM = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "class_embedding", "positional_embedding", "ln_pre",
        "token_embedding", "cls_emb")


class OpenClipConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="an open_clip architecture (ViT-B-32, ...: open_clip.list_models()), or a "
                                   f"local folder holding its {CONFIG_FILE} (as on the Hugging Face Hub)")
    tower: Literal["image", "text"] = Field(description="the tower of the CLIP model this modality uses")
    pretrained: bool | str = Field(False, description="false (random weights), or a local weights file of the "
                                                      "whole CLIP model (.safetensors, .bin, .pt)")
    augment: bool = Field(False, description="image tower: open_clip's train-time random resized crop")
    freeze: bool = Field(False, description="keep the tower fixed (eval mode, no gradients)")
    grad_checkpointing: bool = Field(False, description="recompute activations in backward (open_clip's "
                                                        "set_grad_checkpointing): less memory for about one "
                                                        "more forward")
    lora: LoraOptions | None = Field(None, description="train LoRA adapters instead of the tower (peft); "
                                                      "target_modules default: [attn, c_fc, c_proj]")

    _no_download = field_validator("pretrained")(refuse_download)

    _lora_trains = model_validator(mode="after")(check_not_frozen)

    def requires(self) -> dict[str, str]:
        """Modules these options need beyond polyalign's own: peft for lora."""
        return lora_requirements(self.lora)


def architecture(model: str) -> tuple[str, dict[str, Any]]:
    """open_clip's name for ``model`` (``local-dir:`` + a folder, or a built-in name) and its model config."""
    import open_clip

    folder = Path(model).expanduser()
    if folder.is_dir():
        try:
            config = read_json(folder / CONFIG_FILE, "model config", max_bytes=1 << 20)
        except JsonError as exc:
            raise PolyalignError(f"encoder 'open_clip': {folder} is not an open_clip model folder: cannot read its "
                                 f"{CONFIG_FILE} ({exc})") from None
        if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
            raise PolyalignError(f"encoder 'open_clip': {folder / CONFIG_FILE} has no model_cfg mapping")
        return f"local-dir:{folder}", config["model_cfg"]
    if "/" in model and not model.startswith("hf-hub:") or model.startswith((".", "~")):
        raise PolyalignError(f"encoder 'open_clip': model folder {folder} not found (relative paths resolve against "
                             f"{Path.cwd()}); give an open_clip model folder ({CONFIG_FILE} and its weights) or "
                             f"an architecture name such as ViT-B-32")
    if model not in open_clip.list_models():
        close = difflib.get_close_matches(model, open_clip.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "open_clip.list_models() lists them"
        raise PolyalignError(f"encoder 'open_clip': {model!r} is neither a folder nor an open_clip architecture; "
                             f"{hint} (names with hf-hub: would download, which polyalign never does)")
    return model, open_clip.get_model_config(model)


def check_offline(model_id: str, model_cfg: dict[str, Any], tower: str) -> None:
    """Refuse an architecture whose building or tokenizer would reach the Hugging Face Hub."""
    text_cfg = model_cfg.get("text_cfg", {})
    if text_cfg.get("hf_model_name"):
        raise PolyalignError(f"encoder 'open_clip': {model_id}'s text tower is the Hugging Face model "
                             f"{text_cfg['hf_model_name']!r}, which open_clip would download; use an architecture "
                             f"with its own text transformer, or the `text` encoder with a local model folder")
    hub_tokenizer = text_cfg.get("hf_tokenizer_name") or "siglip" in model_id.lower()
    if tower == "text" and hub_tokenizer and not model_id.startswith("local-dir:"):
        raise PolyalignError(f"encoder 'open_clip': {model_id} tokenizes with a Hugging Face tokenizer, which would "
                             f"be downloaded; save the model as a folder ({CONFIG_FILE} and the tokenizer files) "
                             f"and give that folder as model")


@contextmanager
def no_random_weights_warning() -> Iterator[None]:
    """Silence open_clip's warning that it built random weights (polyalign loads its own, or means it)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


class OpenClipEncoder(Encoder):
    """Images or texts -> one tower of an open_clip model -> its embedding ``(B, embed_dim)``."""

    def __init__(self, config: OpenClipConfig):
        super().__init__()
        try:
            import open_clip
            from open_clip.transform import PreprocessCfg, image_transform_v2
        except ImportError:
            raise PolyalignError("encoder 'open_clip' needs open_clip: pip install 'polyalign[open_clip]'") from None
        self.config = config
        model_id, model_cfg = architecture(config.model)
        check_offline(model_id, model_cfg, config.tower)
        what = "encoder 'open_clip' pretrained"
        file = local_weights_file(config.pretrained, what) if config.pretrained else None
        try:  # custom text: the text tower is one module, as in CustomTextCLIP
            with no_random_weights_warning():
                clip = open_clip.create_model(model_id, load_weights=False, force_custom_text=True,
                                              pretrained_image=False, pretrained_text=False)
        except Exception as exc:
            raise PolyalignError(f"encoder 'open_clip': cannot build {model_id}: {type(exc).__name__}: {exc}") from exc
        if file is not None:
            try:
                open_clip.load_checkpoint(clip, str(file))
            except Exception as exc:
                lines = " ".join(str(exc).split())[:500]
                raise PolyalignError(f"{what}: {file} does not fit {model_id} ({type(exc).__name__}: {lines}). "
                                     f"Check that it holds the weights of that architecture.") from exc
        self.tower: nn.Module = clip.visual if config.tower == "image" else clip.text
        self.width = int(model_cfg["embed_dim"])
        if config.tower == "image":
            preprocess = PreprocessCfg(**clip.visual.preprocess_cfg)
            self.transforms = {train: image_transform_v2(preprocess, is_train=train) for train in (False, True)}
        else:
            self.tokenizer = open_clip.get_tokenizer(model_id)
        if config.freeze:
            self.tower.requires_grad_(False)
        if config.grad_checkpointing:
            self.tower.set_grad_checkpointing(True)
        if config.lora:
            blocks = hasattr(getattr(self.tower, "transformer", None), "resblocks")
            if config.lora.target_modules is None and not blocks:
                raise PolyalignError(f"encoder 'open_clip': {type(self.tower).__name__} towers have no default "
                                     f"lora.target_modules; name the modules to adapt")
            # by default the attention and the MLP of every residual block
            self.tower = add_lora(self.tower, config.lora, ["attn", "c_fc", "c_proj"], "encoder 'open_clip'")

    def layer_groups(self) -> list[list[str]]:
        """As open_clip's ``lock`` groups them: the embeddings (or stem), each residual block, the last one
        with the final norm, then the projection; a timm trunk's groups as timm's ``group_matcher`` has them."""
        tower = base_network(self.tower, self.config.lora)
        if hasattr(tower, "trunk"):
            return timm_layer_groups(self, tower.trunk)
        blocks = list(tower.transformer.resblocks) if hasattr(tower, "transformer") else [
            getattr(tower, f"layer{i}") for i in range(1, 5) if hasattr(tower, f"layer{i}")]
        stem = [getattr(tower, name, None) for name in STEM]
        last = [blocks[-1], getattr(tower, "ln_post", None), getattr(tower, "ln_final", None)]
        projection = [getattr(tower, "proj", None), getattr(tower, "text_projection", None)]
        return named_layer_groups(self, [stem, *[[b] for b in blocks[:-1]], last, projection])

    def merge_for_export(self) -> dict[str, Any]:
        """Merge LoRA adapters into the tower; the export needs neither peft nor the pretrained file."""
        if self.config.lora:
            self.tower = merge_lora(self.tower)
        self.config = self.config.model_copy(update={"lora": None, "pretrained": False})
        return {"lora": None, "pretrained": False}

    def train(self, mode: bool = True) -> "OpenClipEncoder":
        super().train(mode)
        if self.config.freeze:
            self.tower.eval()
        return self

    def decode(self, value: Any, root: Path | None) -> torch.Tensor:
        """An image file -> open_clip's preprocessing ``(3, S, S)`` (with ``augment``: the image as it
        is, ``(3, H, W)`` uint8, which :meth:`finish` transforms at each use); a text -> its tokens
        ``(context,)``."""
        if self.config.tower != "image":
            return self.tokenizer([read_text(value, root)])[0]
        image = read_image(value, root, "RGB")
        if self.config.augment:
            from torchvision.transforms.functional import pil_to_tensor

            return pil_to_tensor(image)
        return self.transforms[False](image)

    def finish(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """With ``augment``: open_clip's train-time (random) or evaluation preprocessing of the image."""
        if self.config.tower != "image" or not self.config.augment:
            return x
        from torchvision.transforms.functional import to_pil_image

        return self.transforms[train](to_pil_image(x))

    def export_example(self, batch: int) -> torch.Tensor:
        if self.config.tower == "image":  # open_clip's transforms make RGB images of the tower's size
            size = base_network(self.tower, self.config.lora).image_size
            height, width = (size, size) if isinstance(size, int) else size
            return torch.randn(batch, 3, height, width)
        return self.tokenizer(example_texts(batch))  # (batch, context_length): a fixed length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tower(x)


def save_random_model(folder: str | Path, model_cfg: dict[str, Any], seed: int = 0) -> Path:
    """Write an open_clip model folder for ``model_cfg`` with random weights, as open_clip saves one for the
    Hub (``open_clip_config.json`` and ``open_clip_model.safetensors``); return the weights file."""
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps({"model_cfg": model_cfg}), encoding="utf-8")
    torch.manual_seed(seed)
    with no_random_weights_warning():
        model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    save_config_for_hf(model, folder / CONFIG_FILE, model_cfg)  # adds the preprocessing open_clip used
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    return folder / WEIGHTS_FILE


def build_open_clip(config: OpenClipConfig) -> OpenClipEncoder:
    """Factory for ``open_clip``."""
    return OpenClipEncoder(config)
