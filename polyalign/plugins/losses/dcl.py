"""Losses ``dcl`` and ``dclw``: decoupled contrastive learning (Yeh et al., ECCV 2022) over modality pairs.

For a pair ``(m, n)`` with ``x = z[m]``, ``y = z[n]`` and ``s = 1/τ``, anchor row ``i`` of ``x`` has
``ℓ_i(x, y) = −w_i·s·x_i·y_i + log Σ_{k≠i} [exp(s·x_i·x_k) + exp(s·x_i·y_k)]``: InfoNCE with the
positive taken out of the denominator, the negatives being every other row of *both* modalities
(``negatives: all``, 2N − 2 of them, the paper's loss). The pair's loss is
``mean_i ℓ_i(x, y) + mean_i ℓ_i(y, x)``: the two directions summed, as in the reference code
(lightly's ``DCLLoss`` averages them: half this value). ``negatives: cross_modal`` keeps only the
other modality's rows (``exp(s·x_i·y_k)``, N − 1 negatives): the form polyalign's ``dcl`` had
before it followed the paper (it then also averaged the directions). Losses can go below zero.

``dcl``: ``w_i = 1``. ``dclw``: ``w_i = 2 − N·softmax_i(x_i·y_i / σ)`` (negative von Mises-Fisher
weighting, σ = 0.5), computed without gradient (as lightly; the reference code lets the gradient
through the weight).

Pair graph (the total is the mean over the pairs of the graph), missing rows and score are
those of ``clip``: each pair term uses the rows where both modalities are present.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from polyalign.plugin import contrast_flops

from .blockwise import Reductions, reduce_blockwise
from .clip import ClipConfig, ClipLoss


class DclConfig(ClipConfig):
    negatives: Literal["all", "cross_modal"] = Field(
        "all", description="all = every other row of both modalities (2N-2, the paper's); "
                           "cross_modal = only the other modality's rows (N-1)")


class DclwConfig(DclConfig):
    sigma: float = Field(0.5, gt=0, description="σ of the von Mises-Fisher weight of the positive term")


def _negative_logits(in_view: bool):
    def block(start: int, stop: int, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        r = torch.arange(stop - start, device=x.device)
        cross = (scale * x[start:stop] @ y.T).index_put((r, r + start), x.new_tensor(-math.inf))
        if not in_view:
            return cross
        own = (scale * x[start:stop] @ x.T).index_put((r, r + start), x.new_tensor(-math.inf))
        return torch.cat([own, cross], 1)
    return block


def decoupled_direction(x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor | float,
                        in_view: bool, chunk_size: int | None = None) -> torch.Tensor:
    """``mean_i ℓ_i(x, y)``: anchors ``x``, positives ``y``; negatives the other rows of ``y``
    (and of ``x`` when ``in_view``); ``chunk_size`` streams the rows (memory linear in N)."""
    n = x.shape[0]
    block = _negative_logits(in_view)
    if chunk_size is None or chunk_size >= n:
        lse = block(0, n, x, y, scale).logsumexp(1)
    else:
        lse = reduce_blockwise(block, n, chunk_size, (x, y, scale), Reductions(row_lse=True))[0]
    return (lse - weights * scale * (x * y).sum(-1)).mean()


class DclLoss(ClipLoss):
    """Decoupled contrastive loss (DCL): InfoNCE without the positive in the denominator, negatives from both
    modalities of each pair

    Decoupled contrastive loss of each pair, both directions summed; mean over pairs."""

    name = "dcl"
    Options = DclConfig

    def positive_weights(self, zm: torch.Tensor, zn: torch.Tensor) -> torch.Tensor | float:
        """``w_i`` of the positive terms (1 for DCL)."""
        return 1.0

    def pair_flops(self, n: int, d: int) -> float:
        """The cross-view ``N x N`` logits, and with negatives: all, both in-view ones."""
        return (3 if self.config.negatives == "all" else 1) * contrast_flops(n, n, d)

    def pair_loss(self, zm: torch.Tensor, zn: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        weights = self.positive_weights(zm, zn)
        in_view = self.config.negatives == "all"
        chunk = self.config.chunk_size
        return (decoupled_direction(zm, zn, scale, weights, in_view, chunk)
                + decoupled_direction(zn, zm, scale, weights, in_view, chunk))


class DclwLoss(DclLoss):
    """DCLW: DCL with the positive terms weighted by a von Mises-Fisher weight (sigma 0.5)

    DCL with the positive terms weighted by ``2 − N·softmax(x_i·y_i / σ)``."""

    name = "dclw"
    Options = DclwConfig

    @torch.no_grad()
    def positive_weights(self, zm: torch.Tensor, zn: torch.Tensor) -> torch.Tensor:
        return 2.0 - zm.shape[0] * torch.softmax((zm * zn).sum(-1) / self.config.sigma, 0)
