"""The optimiser and learning-rate schedule of a run: AdamW, linear warmup, cosine decay."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from polyalign.core.layer_groups import layer_decay_scales
from polyalign.core.model import MultiModalModel
from polyalign.core.recipe import Recipe


def lr_lambda(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warmup, then cosine decay to zero (or constant)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def lr_scales(model: MultiModalModel, recipe: Recipe) -> dict[str, float]:
    """The learning-rate multiplier of each encoder parameter (``encoders.<modality>.<name>``): the
    modality's ``lr_scale``, times ``train.layer_decay ** (n - i)`` in the encoder's layer group i of n."""
    decay = recipe.train.layer_decay
    scales = {}
    for m, node in recipe.modalities.items():
        encoder = model.encoders[m]
        layer = (layer_decay_scales(encoder, decay, f"modalities.{m}") if decay is not None
                 else dict.fromkeys((name for name, _ in encoder.named_parameters()), 1.0))
        scales.update({f"encoders.{m}.{name}": node.lr_scale * s for name, s in layer.items()})
    return scales


def param_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float, lr: float,
                 scales: dict[str, float]) -> list[dict[str, Any]]:
    """One group per (lr scale, decay) pair, full-rate groups first; trainable parameters only.
    Matrices decay; biases, norms, temperatures and missing-embeddings do not."""
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in named:
        if p.requires_grad:
            decays = p.dim() >= 2 and "missing_embeddings" not in name
            groups.setdefault((scales.get(name, 1.0), decays), []).append(p)
    return [{"params": groups[key], "lr": lr * key[0], "weight_decay": weight_decay if key[1] else 0.0}
            for key in sorted(groups, key=lambda k: (-k[0], not k[1]))]


def build_optimizer(model: MultiModalModel, loss: nn.Module, recipe: Recipe,
                    total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the model and the loss (per-parameter rates from :func:`lr_scales`) and its
    warmup + cosine (or constant) schedule over ``total_steps``.

    Fused: one kernel per step, and it can skip a step on the device (see ``step.step_unless``).
    """
    cfg = recipe.train
    named = [*model.named_parameters(), *((f"loss.{n}", p) for n, p in loss.named_parameters())]
    optimizer = torch.optim.AdamW(param_groups(named, cfg.weight_decay, cfg.lr, lr_scales(model, recipe)), lr=cfg.lr,
                                  fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, cfg.warmup_steps, total_steps, cfg.schedule))
    return optimizer, scheduler
