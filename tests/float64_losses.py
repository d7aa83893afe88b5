"""Shared inputs for the float64 loss tests: exact temperatures and unit-norm embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import polyalign
from polyalign.core.loss import Temperature

D64 = torch.float64


def build64(name: str, temperature: float = 0.07, **config) -> torch.nn.Module:
    """The loss in float64 with every ``1/τ`` exactly ``1/temperature`` (parameters start in
    float32, so ``.double()`` alone would keep a rounded value)."""
    loss = polyalign.build("loss", name, temperature=temperature, **config).double()
    with torch.no_grad():
        for module in loss.modules():
            if isinstance(module, Temperature):
                module.log_scale.fill_(math.log(1.0 / temperature))
    return loss


def unit(n: int, d: int, m: int, seed: int = 0, dtype: torch.dtype = D64) -> list[torch.Tensor]:
    """``m`` leaf tensors of ``n`` random unit vectors in ``d`` dimensions (requiring grad)."""
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1).requires_grad_() for _ in range(m)]
