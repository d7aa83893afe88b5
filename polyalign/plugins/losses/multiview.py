"""Shared pieces of the multi-view objectives: stacking views and the within-tuple positives."""

from __future__ import annotations

import math

import torch


def stack_views(embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Z, P)``: embeddings ``(M, N, d)`` and presence ``(M, N)`` in the dict's order."""
    names = list(embeddings)
    return torch.stack([embeddings[m] for m in names]), torch.stack([present[m] for m in names])


def positive_logsumexp(z: torch.Tensor, p: torch.Tensor, scale: torch.Tensor, ordered: bool) -> torch.Tensor:
    """Per tuple, ``log Σ e^{s(z_il, z_il')}`` over pairs of present views: ordered pairs ``l ≠ l'``
    or unordered ``l < l'``. ``z``: ``(M, N, d)``, ``p``: ``(M, N)`` -> ``(N,)``."""
    m = z.shape[0]
    sims = scale * torch.einsum("lnd,knd->nlk", z, z)  # (N, M, M)
    pair = p.T[:, :, None] & p.T[:, None, :]
    keep = torch.ones(m, m, dtype=torch.bool, device=z.device)
    keep = keep.triu(1) if not ordered else keep & ~torch.eye(m, dtype=torch.bool, device=z.device)
    return sims.masked_fill(~(pair & keep), -math.inf).logsumexp((1, 2))
