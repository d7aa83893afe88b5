"""Loss ``mv_dhel``: multi-view decoupled hyperspherical energy loss (Koromilas et al., 2025).

With ``s(x, y) = x·y/τ``: negatives only within the same modality,
``−(1/N) Σ_i log[ Σ_{l<l'} e^{s(z_il, z_il')} / Π_l Σ_{j≠i} e^{s(z_il, z_jl)} ]``; the product
becomes a sum of per-modality logsumexps, O(M·N²·d). Everything is a logsumexp (no raw ``exp``),
so it stays finite at small τ with many modalities, where the reference code overflows.

Missing modalities: each tuple uses its present modalities: the numerator over its present
pairs, the denominator over its present modalities, each against the present rows of that
modality. A modality with fewer than two present rows in the batch has no negatives and is
left out; tuples with fewer than two usable modalities add no term.

Score: as for pairwise CLIP, ``Σ_q Σ_c z_q·z_c`` over every (query, candidate) pair of modalities.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from polyalign.core.loss import Loss, LossConfig, LossOutput, Temperature, full_present
from polyalign.core.step_cost import contrast_flops

from .blockwise import Reductions, reduce_blockwise
from .multiview import positive_logsumexp, stack_views
from .pairwise import sum_of_cosines, summed_query
from .rows import zero_loss


class MvDhelConfig(LossConfig):
    chunk_size: int | None = Field(None, ge=1, description="rows per block of each modality's N x N "
                                                           "similarities; default: dense")


def _within_modality_logits(present_rows: torch.Tensor):
    def block(start: int, stop: int, z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        logits = scale * z[start:stop] @ z.T
        r = torch.arange(stop - start, device=logits.device)
        logits = logits.masked_fill(~present_rows[None, :], -math.inf)
        return logits.index_put((r, r + start), logits.new_tensor(-math.inf))
    return block


class MvDhelLoss(Loss):
    """Multi-view DHEL: within-tuple alignment against per-modality uniformity terms."""

    exact_inner_product = True

    def __init__(self, config: MvDhelConfig):
        super().__init__()
        self.config = config
        self.temperature = Temperature(config.temperature, config.learn_temperature)

    def forward(self, embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> LossOutput:
        names = list(embeddings)
        z, p = stack_views(embeddings, full_present(embeddings, present))
        n = z.shape[1]
        scale = self.temperature.scale
        metrics = {"temperature": (1.0 / scale).detach()}
        usable = p & (p.sum(1, keepdim=True) >= 2)
        valid = usable.sum(0) >= 2
        if not bool(valid.any()):
            return LossOutput(zero_loss(embeddings), metrics)
        num = positive_logsumexp(z, usable, scale, ordered=False)
        den = torch.zeros_like(num)
        chunk = self.config.chunk_size
        for k, name in enumerate(names):
            if not bool(usable[k].any()):
                continue
            block = _within_modality_logits(usable[k])
            if chunk is None or chunk >= n:
                lse = block(0, n, z[k], scale).logsumexp(1)
            else:
                lse = reduce_blockwise(block, n, chunk, (z[k], scale), Reductions(row_lse=True))[0]
            lse = torch.where(usable[k], lse, torch.zeros_like(lse))
            den = den + lse
            if bool((usable[k] & valid).any()):
                metrics[f"uniformity_{name}"] = lse[usable[k] & valid].detach().mean()
        num, den = num[valid], den[valid]
        metrics["positives_lse"] = num.detach().mean()
        return LossOutput((den - num).mean(), metrics)

    def step_flops(self, n: int, d: int, m: int) -> float:
        return m * contrast_flops(n, n, d)

    def score_tuples(self, queries: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum_of_cosines(queries, candidates)

    def inner_product_query(self, queries: dict[str, torch.Tensor], target: str) -> torch.Tensor:
        return summed_query(queries)


def build_mv_dhel(config: MvDhelConfig) -> MvDhelLoss:
    return MvDhelLoss(config)
