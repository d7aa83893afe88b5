"""Loss ``align_uniform``: alignment + uniformity (Wang & Isola, ICML 2020), a regulariser.

``align = E_i ‖z[m]_i − z[n]_i‖^α`` over the pairs of the graph (α = 2), and
``uniform = log E_{i≠j} exp(−t‖z_i − z_j‖²)`` per modality (t = 2); the loss is
``align_weight·mean(align) + uniform_weight·mean(uniform)``. Meant to be added with a weight to
another loss in a recipe's list (``loss: [{plugin: clip}, {plugin: align_uniform, weight: 0.1}]``);
on CLIP it closes the "contrastive gap". It has no temperature.

Missing modalities: each alignment term uses the rows where both modalities are present, each
uniformity term the present rows of its modality (at least two).

Score: ``−Σ_q Σ_c ‖z_q − z_c‖²`` over every (query, candidate) pair of modalities, the alignment
the loss optimises (the same ranking as the sum of cosines for unit vectors).
The loss cannot know that the candidates are unit vectors (the model's ``normalize`` decides), so
it declares no inner-product form (``inner_product_query`` is None).
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from polyalign.plugin import Loss, LossOutput, contrast_flops, full_present

from .pairwise import PairGraph, pair_graph, paired_rows
from .rows import zero_loss


class AlignUniformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float = Field(2.0, gt=0, description="exponent of the alignment distance")
    t: float = Field(2.0, gt=0, description="sharpness of the uniformity kernel exp(-t·‖x−y‖²)")
    align_weight: float = Field(1.0, ge=0, description="weight of the alignment term")
    uniform_weight: float = Field(1.0, ge=0, description="weight of the uniformity term")
    pairs: PairGraph = Field("full", description="pairs aligned: full = every pair; star = pairs with the anchor")
    anchor: str | None = Field(None, description="anchor modality of the star graph (default: first)")


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``‖x_i − y_j‖²`` ``(N, C)`` without a square root (differentiable at zero distance)."""
    return ((x * x).sum(-1)[:, None] + (y * y).sum(-1)[None, :] - 2 * x @ y.T).clamp_min(0)


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """``mean_i ‖x_i − y_i‖^α``."""
    sq = ((x - y) ** 2).sum(-1)
    return (sq if alpha == 2 else sq.clamp_min(torch.finfo(sq.dtype).tiny).pow(alpha / 2)).mean()


def uniformity(z: torch.Tensor, t: float) -> torch.Tensor:
    """``log mean_{i≠j} exp(−t‖z_i − z_j‖²)``."""
    n = z.shape[0]
    logits = (-t * squared_distances(z, z)).masked_fill(torch.eye(n, dtype=torch.bool, device=z.device),
                                                         -math.inf)
    return logits.flatten().logsumexp(0) - math.log(n * (n - 1))


class AlignUniformLoss(Loss):
    """Alignment + uniformity (Wang & Isola) regulariser, to add with a weight to another loss

    Weighted alignment of paired rows plus uniformity of each modality on the sphere."""

    name = "align_uniform"
    Options = AlignUniformConfig

    scores_in_a_sum = False  # a regulariser: a weighted list scores with its other terms

    def __init__(self, config: AlignUniformConfig):
        super().__init__()
        self.config = config

    def forward(self, embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> LossOutput:
        cfg = self.config
        present = full_present(embeddings, present)
        align: dict[str, torch.Tensor] = {}
        for m, n in pair_graph(list(embeddings), cfg.pairs, cfg.anchor):
            rows = paired_rows(present, m, n)
            if rows.numel():
                align[f"{m}-{n}"] = alignment(embeddings[m][rows], embeddings[n][rows], cfg.alpha)
        uniform: dict[str, torch.Tensor] = {}
        for m, z in embeddings.items():
            rows = present[m].nonzero(as_tuple=True)[0]
            if rows.numel() >= 2:
                uniform[m] = uniformity(z[rows], cfg.t)
        if not align and not uniform:
            return LossOutput(zero_loss(embeddings), {})
        loss = zero_loss(embeddings)
        if align:
            loss = loss + cfg.align_weight * torch.stack(list(align.values())).mean()
        if uniform:
            loss = loss + cfg.uniform_weight * torch.stack(list(uniform.values())).mean()
        metrics = {f"align_{k}": v.detach() for k, v in align.items()}
        metrics.update({f"uniform_{k}": v.detach() for k, v in uniform.items()})
        return LossOutput(loss, metrics)

    def step_flops(self, n: int, d: int, m: int) -> float:
        return m * contrast_flops(n, n, d)

    def score_tuples(self, queries: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        return -sum(squared_distances(q, c) for q in queries.values() for c in candidates.values())
