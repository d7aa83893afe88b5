"""Loss ``clip``: pairwise InfoNCE (CLIP / CMC) over a full or star pair graph."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from polyalign.core.loss import Loss, LossConfig, LossOutput, Temperature, full_present

from .pairwise import PairGraph, pair_graph, paired_rows, sum_of_cosines


class ClipConfig(LossConfig):
    pairs: PairGraph = Field("full", description="full = every pair; star = pairs with the anchor")
    anchor: str | None = Field(None, description="anchor modality of the star graph (default: first)")


def info_nce(zm: torch.Tensor, zn: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of matched rows: ``½(CE(S) + CE(Sᵀ))`` with ``S = scale·zm znᵀ``."""
    logits = scale * zm @ zn.T
    labels = torch.arange(zm.shape[0], device=zm.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class ClipLoss(Loss):
    """Mean over pairs of symmetric InfoNCE; each pair uses the rows where both are present."""

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
                terms[f"{m}-{n}"] = info_nce(embeddings[m][rows], embeddings[n][rows], scale)
        if terms:
            loss = torch.stack(list(terms.values())).mean()
        else:  # no pair has two rows: a zero that keeps the graph connected
            loss = sum(z.sum() for z in embeddings.values()) * 0.0
        metrics = {f"loss_{k}": float(v.detach()) for k, v in terms.items()}
        metrics["logit_scale"] = float(scale.detach())
        return LossOutput(loss, metrics)

    def score(self, queries: dict[str, torch.Tensor], candidates: torch.Tensor, target: str) -> torch.Tensor:
        return sum_of_cosines(queries, candidates)


def build_clip(config: ClipConfig) -> ClipLoss:
    return ClipLoss(config)
