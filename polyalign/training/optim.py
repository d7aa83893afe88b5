"""The optimiser and learning-rate schedule of a run: AdamW, linear warmup, cosine decay."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from polyalign.core.recipe import TrainSection


def lr_lambda(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warmup, then cosine decay to zero (or constant)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices; no decay for biases, norms, temperatures and missing-embeddings."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.dim() >= 2 and "missing_embeddings" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(modules: list[nn.Module], cfg: TrainSection,
                    total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``modules`` and its warmup + cosine (or constant) schedule over ``total_steps``.

    Fused: one kernel per step, and it can skip a step on the device (see ``step.step_unless``).
    """
    optimizer = torch.optim.AdamW(param_groups(modules, cfg.weight_decay), lr=cfg.lr, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, cfg.warmup_steps, total_steps, cfg.schedule))
    return optimizer, scheduler
