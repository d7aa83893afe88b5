"""Loss ``clip``: pairwise InfoNCE (CLIP / CMC) over a full or star pair graph.

Missing modalities: each pair term uses the rows where both modalities are present; the loss
is the mean over the pair terms that have at least two such rows.

Score: ``Σ_q Σ_c z_q·z_c`` over every (query, candidate) pair of modalities (docs/losses.md).
"""

from __future__ import annotations

import torch
from pydantic import Field

from polyalign.plugin import Loss, LossConfig, LossOutput, Temperature, contrast_flops, full_present

from .pairwise import PairGraph, pair_graph, paired_rows, sum_of_cosines, summed_query, symmetric_info_nce
from .rows import zero_loss


class ClipConfig(LossConfig):
    pairs: PairGraph = Field("full", description="full = every pair; star = pairs with the anchor")
    anchor: str | None = Field(None, description="anchor modality of the star graph (default: first)")
    chunk_size: int | None = Field(None, ge=1, description="rows per block (memory linear in the batch); "
                                                           "default: the dense N x N logits")


class ClipLoss(Loss):
    """Pairwise InfoNCE (CLIP/CMC) over all pairs or a star around one anchor; mean over pairs

    Mean over pairs of symmetric InfoNCE; each pair uses the rows where both are present."""

    name = "clip"
    Options = ClipConfig

    exact_inner_product = True

    def __init__(self, config: ClipConfig):
        super().__init__()
        self.config = config
        self.temperature = Temperature(config.temperature, config.learn_temperature)

    def forward(self, embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> LossOutput:
        present = full_present(embeddings, present)
        scale = self.temperature.scale
        terms: dict[str, torch.Tensor] = {}
        for m, n in pair_graph(list(embeddings), self.config.pairs, self.config.anchor):
            rows = paired_rows(present, m, n)
            if rows.numel() >= 2:
                terms[f"{m}-{n}"] = self.pair_loss(embeddings[m][rows], embeddings[n][rows], scale)
        loss = torch.stack(list(terms.values())).mean() if terms else zero_loss(embeddings)
        metrics = {f"loss_{k}": v.detach() for k, v in terms.items()}
        metrics["logit_scale"] = scale.detach()
        metrics["temperature"] = (-self.temperature.log_scale).exp().detach()  # τ even where 1/τ underflows
        return LossOutput(loss, metrics)

    def step_flops(self, n: int, d: int, m: int) -> float:
        pairs = m * (m - 1) / 2 if self.config.pairs == "full" else m - 1
        return pairs * self.pair_flops(n, d)

    def pair_flops(self, n: int, d: int) -> float:
        """Operations of one pair's term: one ``N x N`` logit matrix."""
        return contrast_flops(n, n, d)

    def pair_loss(self, zm: torch.Tensor, zn: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The loss of one pair of modalities on their matched rows."""
        return symmetric_info_nce(zm, zn, scale, self.config.chunk_size)

    def score_tuples(self, queries: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum_of_cosines(queries, candidates)

    def inner_product_query(self, queries: dict[str, torch.Tensor], target: str) -> torch.Tensor:
        return summed_query(queries)
