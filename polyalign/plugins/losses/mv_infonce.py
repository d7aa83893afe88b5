"""Loss ``mv_infonce``: multi-view InfoNCE (Koromilas et al., 2025), views = modalities.

With ``s(x, y) = x·y/τ`` and ``z_il`` the embedding of modality ``l`` in tuple ``i``, one term per
tuple with all its positives in one log:
``−(1/N) Σ_i log[ Σ_{l≠l'} e^{s(z_il, z_il')} / Σ_l Σ_{(j,m)≠(i,l)} e^{s(z_il, z_jm)} ]``.
Numerator and denominator are logsumexps over masked blocks of the ``MN x MN`` similarity
matrix; ``chunk_size`` streams its rows (memory linear in N, exact gradients by recomputation).

Missing modalities: each tuple uses its present modalities; absent entries are neither anchors
nor negatives. Tuples with fewer than two present modalities have no positive pair and add no
term (the loss is the mean over the others).

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


class MvInfoNceConfig(LossConfig):
    chunk_size: int | None = Field(None, ge=1, description="rows of the MN x MN similarity matrix per block "
                                                           "(memory linear in the batch); default: dense")


def _all_pairs_logits(present_flat: torch.Tensor):
    def block(start: int, stop: int, flat: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        logits = scale * flat[start:stop] @ flat.T
        r = torch.arange(stop - start, device=logits.device)
        logits = logits.masked_fill(~present_flat[None, :], -math.inf)
        return logits.index_put((r, r + start), logits.new_tensor(-math.inf))
    return block


class MvInfoNceLoss(Loss):
    """Multi-view InfoNCE: all positives of a tuple in one numerator, every other view as negative."""

    exact_inner_product = True

    def __init__(self, config: MvInfoNceConfig):
        super().__init__()
        self.config = config
        self.temperature = Temperature(config.temperature, config.learn_temperature)

    def forward(self, embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> LossOutput:
        z, p = stack_views(embeddings, full_present(embeddings, present))
        m, n, d = z.shape
        scale = self.temperature.scale
        metrics = {"temperature": (1.0 / scale).detach()}
        valid = p.sum(0) >= 2
        if not bool(valid.any()):
            return LossOutput(zero_loss(embeddings), metrics)
        num = positive_logsumexp(z, p, scale, ordered=True)
        flat, p_flat = z.reshape(m * n, d), p.reshape(m * n)
        block = _all_pairs_logits(p_flat)
        chunk = self.config.chunk_size
        if chunk is None or chunk >= m * n:
            row_lse = block(0, m * n, flat, scale).logsumexp(1)
        else:
            row_lse = reduce_blockwise(block, m * n, chunk, (flat, scale), Reductions(row_lse=True))[0]
        den = row_lse.view(m, n).masked_fill(~p, -math.inf).logsumexp(0)
        num, den = num[valid], den[valid]
        metrics.update({"positives_lse": num.detach().mean(), "all_lse": den.detach().mean()})
        return LossOutput((den - num).mean(), metrics)

    def step_flops(self, n: int, d: int, m: int) -> float:
        return contrast_flops(m * n, m * n, d)

    def score_tuples(self, queries: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum_of_cosines(queries, candidates)

    def inner_product_query(self, queries: dict[str, torch.Tensor], target: str) -> torch.Tensor:
        return summed_query(queries)


def build_mv_infonce(config: MvInfoNceConfig) -> MvInfoNceLoss:
    return MvInfoNceLoss(config)
