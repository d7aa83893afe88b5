"""Encoder ``image``: any timm model over PNG/JPEG files, with local weights only."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from polyalign.plugin import Encoder, PolyalignError, named_layer_groups, resolve_file

from .decode_reason import decode_reason
from .lora import LoraOptions, add_lora, base_network, check_not_frozen, lora_requirements, merge_lora
from .pretrained import load_weights_into, local_weights_file, refuse_download

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_PIXELS = 40_000_000  # an RGB image of 40 million pixels decodes to 120 MB (a 6300 x 6300 photo)


class ImageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field("resnet18", description="any timm model name, e.g. resnet18, vit_tiny_patch16_224")
    pretrained: bool | str = Field(False, description="false, or the path of a local .safetensors/.pth file")
    image_size: int = Field(224, ge=8, description="images are resized and cropped to this square size")
    channels: Literal[1, 3] = Field(3, description="3 = RGB, 1 = greyscale")
    mean: list[float] | None = Field(None, description="per-channel mean (default: the model's, else ImageNet)")
    std: list[float] | None = Field(None, description="per-channel std (default: the model's, else ImageNet)")
    augment: bool = Field(False, description="train-time random resized crop and horizontal flip")
    max_pixels: int = Field(MAX_PIXELS, ge=1, description="largest image decoded (width x height, read from its "
                                                          "header first); larger ones are refused with their size")
    freeze: bool = Field(False, description="keep the backbone fixed (eval mode, no gradients)")
    grad_checkpointing: bool = Field(False, description="recompute activations in backward (timm's "
                                                        "set_grad_checkpointing): less memory for about one "
                                                        "more forward")
    timm_kwargs: dict[str, Any] = Field(default_factory=dict,
                                        description="extra timm.create_model arguments, e.g. {depth: 2}")
    lora: LoraOptions | None = Field(None, description="train LoRA adapters instead of the backbone (peft); "
                                                      "target_modules default: all-linear")

    _no_download = field_validator("pretrained")(refuse_download)

    _lora_trains = model_validator(mode="after")(check_not_frozen)


def read_image(value: Any, root: Path | None, mode: str, max_pixels: int = MAX_PIXELS) -> Any:
    """The PNG/JPEG file a raw value names, decoded into a PIL image of ``mode`` (``RGB`` or ``L``); one
    over ``max_pixels`` (width x height, from its header) is refused before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    path = resolve_file(value, root, "image")
    try:
        with path.open("rb") as fh, Image.open(fh) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise PolyalignError(f"image {path} is {width} x {height} pixels ({width * height / 1e6:.1f} million), "
                                     f"more than the {max_pixels / 1e6:g} million the image encoder decodes "
                                     f"(its option max_pixels); make it smaller, or raise max_pixels")
            img.load()
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PolyalignError(f"cannot decode image {path}: {decode_reason(exc)}. Is it a valid PNG or JPEG file?") from exc


def timm_layer_groups(encoder: nn.Module, backbone: nn.Module) -> list[list[str]]:
    """The layer groups of a timm ``backbone`` inside ``encoder``, as timm's ``group_matcher`` defines
    them (stem, then each block, the last with the final norm); one group when the model has no matcher."""
    from timm.models import group_parameters

    if not hasattr(backbone, "group_matcher"):
        return [[name for name, _ in encoder.named_parameters()]]
    groups = group_parameters(backbone, backbone.group_matcher(coarse=False))
    return named_layer_groups(encoder, [[backbone.get_parameter(n) for n in groups[i]] for i in sorted(groups)])


def create_backbone(name: str, channels: int, kwargs: dict[str, Any], image_size: int) -> nn.Module:
    """A timm model without classifier (``num_classes=0``: pooled features), random init."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else " `timm.list_models()` lists them."
        raise PolyalignError(f"encoder 'image': unknown timm model {name!r}.{hint}")
    cfg = get_pretrained_cfg(name)
    kwargs = dict(kwargs)
    if cfg is not None and cfg.fixed_input_size and "img_size" not in kwargs:
        kwargs["img_size"] = image_size
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, in_chans=channels, **kwargs)
    except TypeError as exc:
        raise PolyalignError(f"encoder 'image': timm model {name!r} rejected timm_kwargs "
                             f"{kwargs}: {exc}") from exc


class ImageEncoder(Encoder):
    """Any timm model over PNG/JPEG files; pretrained: false or a local .safetensors/.pth file

    Image files -> timm backbone -> pooled features ``(B, num_features)``."""

    name = "image"
    Options = ImageConfig

    @classmethod
    def requires_for(cls, options: ImageConfig) -> dict[str, str]:
        """Modules these options need beyond polyalign's own: peft for lora."""
        return lora_requirements(options.lora)

    def __init__(self, config: ImageConfig):
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config.model, config.channels, config.timm_kwargs, config.image_size)
        self.width = int(self.backbone.num_features)
        if config.pretrained:
            classifier = self.backbone.pretrained_cfg.get("classifier") or ()
            prefixes = (classifier,) if isinstance(classifier, str) else tuple(classifier)
            load_weights_into(self.backbone, local_weights_file(config.pretrained, "encoder 'image' pretrained"),
                              "encoder 'image' pretrained", tuple(f"{p}." for p in prefixes))
        mean, std = self._stats()
        # plain CPU tensors, not buffers: loading happens on the CPU (in DataLoader workers)
        self.pixel_mean = torch.tensor(mean).view(-1, 1, 1)
        self.pixel_std = torch.tensor(std).view(-1, 1, 1)
        if config.freeze:
            self.backbone.requires_grad_(False)
        if config.grad_checkpointing:
            try:
                self.backbone.set_grad_checkpointing(True)
            except (AssertionError, NotImplementedError) as exc:
                raise PolyalignError(f"encoder 'image': timm model {config.model!r} does not support gradient "
                                     f"checkpointing ({exc or 'set_grad_checkpointing is not implemented'}); "
                                     f"set grad_checkpointing: false") from None
        if config.lora:
            self.backbone = add_lora(self.backbone, config.lora, "all-linear", "encoder 'image'")

    def layer_groups(self) -> list[list[str]]:
        """timm's groups: the stem, then each block (the last with the final norm)."""
        return timm_layer_groups(self, base_network(self.backbone, self.config.lora))

    def merge_for_export(self) -> dict[str, Any]:
        """Merge LoRA adapters into the backbone; the export needs neither peft nor the pretrained file."""
        if self.config.lora:
            self.backbone = merge_lora(self.backbone)
        self.config = self.config.model_copy(update={"lora": None, "pretrained": False})
        return {"lora": None, "pretrained": False}

    def _stats(self) -> tuple[list[float], list[float]]:
        cfg, n = self.config, self.config.channels
        model_cfg = self.backbone.pretrained_cfg
        mean = cfg.mean or list(model_cfg.get("mean") or IMAGENET_MEAN)
        std = cfg.std or list(model_cfg.get("std") or IMAGENET_STD)
        if n == 1 and cfg.mean is None:
            mean = [sum(mean) / len(mean)]
        if n == 1 and cfg.std is None:
            std = [sum(std) / len(std)]
        for name, values in (("mean", mean), ("std", std)):
            if len(values) != n:
                raise PolyalignError(f"encoder 'image': {name} has {len(values)} values for {n} channel(s)")
        if any(s <= 0 for s in std):
            raise PolyalignError(f"encoder 'image': std values must be positive, got {std}")
        return list(mean), list(std)

    def train(self, mode: bool = True) -> "ImageEncoder":
        super().train(mode)
        if self.config.freeze:
            self.backbone.eval()
        return self

    def load_options(self) -> dict[str, Any]:
        return {"image_size": self.config.image_size, "channels": self.config.channels,
                "mean": self.pixel_mean.flatten().tolist(), "std": self.pixel_std.flatten().tolist(),
                "augment": self.config.augment}

    def decode(self, value: Any, root: Path | None) -> torch.Tensor:
        """Decode a PNG/JPEG file: a normalised ``(C, S, S)`` float tensor, or with ``augment``
        the image as it is (``(C, H, W)`` uint8), which :meth:`finish` crops at each use."""
        from torchvision.transforms.v2 import functional as TF

        x = TF.pil_to_tensor(read_image(value, root, "RGB" if self.config.channels == 3 else "L",
                                        self.config.max_pixels))
        return x if self.config.augment else self._normalize(self._center(x))

    def finish(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """With ``augment``: a random resized crop and flip in training, the centre crop otherwise."""
        if not self.config.augment:
            return x
        from torchvision.transforms.v2 import RandomResizedCrop
        from torchvision.transforms.v2 import functional as TF

        if not train:
            return self._normalize(self._center(x))
        size = [self.config.image_size, self.config.image_size]
        top, left, h, w = RandomResizedCrop.get_params(x, scale=[0.5, 1.0], ratio=[3 / 4, 4 / 3])
        x = TF.resized_crop(x, top, left, h, w, size, antialias=True)
        if torch.rand(()) < 0.5:
            x = TF.horizontal_flip(x)
        return self._normalize(x)

    def _center(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        size = self.config.image_size
        return TF.center_crop(TF.resize(x, size, antialias=True), [size, size])

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - self.pixel_mean) / self.pixel_std

    def export_example(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, self.config.channels, self.config.image_size, self.config.image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)
