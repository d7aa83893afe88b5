"""Loss ``margin_clip``: CLIP's pairwise InfoNCE with an additive margin on the positives.

For each pair of modalities (m, n), on the rows that have both: ``S = (z_m z_nᵀ − margin·I) / τ``
and ``½·(CE(S) + CE(Sᵀ))`` with row i's positive at column i; the loss is the mean over pairs.
The margin makes a positive count only once it beats every negative by ``margin`` (the
additive-margin softmax of face and speaker verification). Retrieval scores by plain cosines.
"""

from __future__ import annotations

from itertools import combinations

import torch
import torch.nn.functional as F
from pydantic import Field

from polyalign.plugin import Loss, LossConfig, LossOutput, Temperature, full_present


class MarginClipConfig(LossConfig):
    """``temperature`` and ``learn_temperature`` come from LossConfig; ``margin`` is this loss's own."""

    margin: float = Field(0.2, ge=0, le=2, description="subtracted from each positive cosine before the softmax")


class MarginClipLoss(Loss):
    """Pairwise InfoNCE with an additive margin on the positives (AM-softmax style), mean over pairs."""

    name = "margin_clip"
    Options = MarginClipConfig

    def __init__(self, config: MarginClipConfig):
        super().__init__()
        self.margin = config.margin
        self.temperature = Temperature(config.temperature, config.learn_temperature)  # learns log(1/τ)

    def forward(self, embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> LossOutput:
        present = full_present(embeddings, present)  # None means every row is present
        scale = self.temperature.scale  # 1/τ; polyalign keeps it in [1, 100] after each step
        terms = {}
        for m, n in combinations(sorted(embeddings), 2):  # by name: the modalities' order does not matter
            rows = (present[m] & present[n]).nonzero(as_tuple=True)[0]  # only rows that have both
            if rows.numel() < 2:
                continue  # nothing to contrast
            cos = embeddings[m][rows] @ embeddings[n][rows].T
            logits = scale * (cos - self.margin * torch.eye(len(rows), dtype=cos.dtype, device=cos.device))
            labels = torch.arange(len(rows), device=cos.device)
            terms[f"{m}-{n}"] = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        if terms:
            loss = torch.stack(list(terms.values())).mean()
        else:  # a batch with nothing to contrast: a zero that keeps the embeddings in the graph
            loss = sum(z.sum() for z in embeddings.values()) * 0.0
        metrics = {f"loss_{pair}": value.detach() for pair, value in terms.items()}
        metrics["temperature"] = (1.0 / scale).detach()
        return LossOutput(loss, metrics)

    def score_tuples(self, queries: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(Q, C)``: the sum of the cosines of every query modality with every candidate modality. The
        margin only shapes training; a match is ranked by how close the embeddings are."""
        return sum(q @ c.T for q in queries.values() for c in candidates.values())

