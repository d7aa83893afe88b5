"""LoRA adapters on an encoder's network through ``peft``, and their merge for export."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from polyalign.core.errors import PolyalignError


class LoraOptions(BaseModel):
    """``lora: {r, alpha, dropout, target_modules}`` of an encoder."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(8, ge=1, description="rank of the adapters")
    alpha: float = Field(16.0, gt=0, description="scaling: the adapter's update is multiplied by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: list[str] | None = Field(
        None, min_length=1, description="names (or name suffixes) of the modules that get adapters; "
                                        "default: the encoder's own choice")


def lora_requirements(options: LoraOptions | None) -> dict[str, str]:
    """What an encoder config's ``requires()`` adds for its ``lora`` option: peft, when set."""
    return {"peft": "polyalign[lora]"} if options is not None else {}


def check_not_frozen(config: Any) -> Any:
    """An encoder config's check that ``lora`` and ``freeze`` are not both set."""
    if config.lora is not None and config.freeze:
        raise ValueError("lora trains adapters inside the encoder and freeze keeps all of it fixed; set one of them")
    return config


def add_lora(module: nn.Module, options: LoraOptions, default_targets: list[str] | str, what: str) -> nn.Module:
    """``module`` with LoRA adapters (a peft ``LoraModel``): only the adapters train in it."""
    try:
        from peft import LoraConfig, LoraModel
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        raise PolyalignError(f"{what}: lora needs the peft package: pip install 'polyalign[lora]'") from None
    targets = options.target_modules or default_targets
    config = LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout, target_modules=targets)
    try:
        adapted = LoraModel(module, config, "default")
    except ValueError as exc:
        linear = [n for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.MultiheadAttention))]
        raise PolyalignError(f"{what}: lora.target_modules {targets} ({exc}). Modules that can get adapters "
                             f"include: {', '.join(linear[:8]) or 'none'}") from None
    # peft adapts an nn.MultiheadAttention as a whole (its base_layer); one of its Linear parts alone is never called
    whole = {id(m.get_base_layer()) for m in adapted.modules() if isinstance(m, BaseTunerLayer)}
    bypassed = [n for n, m in module.named_modules() if isinstance(m, nn.MultiheadAttention) and id(m) not in whole
                and any(isinstance(child, BaseTunerLayer) for child in m.children())]
    if bypassed:
        raise PolyalignError(f"{what}: lora.target_modules {targets} puts adapters on the output projection inside "
                             f"nn.MultiheadAttention ({bypassed[0]}), whose forward never calls it: they would "
                             f"train nothing. Target the attention module itself "
                             f"({bypassed[0].rsplit('.', 1)[-1]!r}) instead.")
    return adapted


def base_network(module: nn.Module, options: LoraOptions | None) -> nn.Module:
    """The network inside an :func:`add_lora` module (``module`` itself when ``options`` is None)."""
    return module.model if options is not None else module


def merge_lora(module: nn.Module) -> nn.Module:
    """The network of a :func:`add_lora` module with its adapters merged into the weights (no peft left)."""
    return module.merge_and_unload()
