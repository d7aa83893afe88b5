"""Evaluator ``embedding_geometry``: the shape of the learned space, on the unit sphere.

Every embedding is L2-normalised first (whatever the model's own ``normalize``), then, in float64:

- ``modality_gap`` for each pair of modalities (query ``[a]``, target ``b``): the distance between
  the centroids of the two modalities' embeddings over the rows holding both,
  ``|| mean_i x_i - mean_i y_i ||`` (Liang et al. 2022, "Mind the Gap");
- ``alignment`` for each pair: ``mean_i || x_i - y_i ||^alpha`` over the same rows, 0 when every
  pair coincides (Wang & Isola 2020, ``alpha = 2``);
- ``uniformity`` for each modality (query and target that modality):
  ``log mean_{i<j} exp(-t || x_i - x_j ||^2)`` over its rows (Wang & Isola 2020, ``t = 2``), lower
  is more uniform; at most ``max_rows`` rows, a seeded sample of them when there are more.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from polyalign.plugin import EvalContext

TASK = "embedding_geometry"


class EmbeddingGeometryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: PositiveFloat = Field(2.0, description="exponent of the alignment distance")
    t: PositiveFloat = Field(2.0, description="temperature of the uniformity kernel")
    max_rows: int = Field(4000, ge=2, description="rows per modality for uniformity (a seeded sample beyond)")


def modality_gap(x: Any, y: Any) -> float:
    """Distance between the centroids of two ``(N, E)`` sets of unit vectors."""
    return float((x.mean(0) - y.mean(0)).norm())


def alignment(x: Any, y: Any, alpha: float = 2.0) -> float:
    """Mean ``||x_i - y_i||^alpha`` over paired unit vectors."""
    return float((x - y).norm(dim=1).pow(alpha).mean())


def uniformity(x: Any, t: float = 2.0) -> float:
    """``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` over distinct pairs of rows of ``x``."""
    import torch

    squared = torch.pdist(x).pow(2)
    return float(torch.logsumexp(-t * squared, 0) - math.log(squared.numel()))


class EmbeddingGeometry:
    """Modality gap (Liang et al. 2022), alignment and uniformity (Wang & Isola 2020) of the normalised
    test embeddings

    The geometry of the learned space: centroid distance and alignment per modality pair, uniformity
    per modality."""

    name = "embedding_geometry"
    Options = EmbeddingGeometryConfig

    def __init__(self, config: EmbeddingGeometryConfig):
        self.config = config

    def __call__(self, ctx: EvalContext) -> list[dict[str, Any]]:
        import torch
        import torch.nn.functional as F

        cfg = self.config
        emb, present = ctx.embeddings()
        unit = {m: F.normalize(emb[m].double(), dim=-1) for m in ctx.modalities}
        out: list[dict[str, Any]] = []
        for a, b in combinations(ctx.modalities, 2):
            rows = (present[a] & present[b]).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            x, y = unit[a][rows], unit[b][rows]
            base = {"task": TASK, "target": b, "query": [a], "n": int(rows.numel())}
            out.append({**base, "metric": "modality_gap", "value": modality_gap(x, y)})
            out.append({**base, "metric": "alignment", "value": alignment(x, y, cfg.alpha)})
        generator = torch.Generator().manual_seed(ctx.seed)
        for m in ctx.modalities:
            rows = present[m].nonzero(as_tuple=True)[0]
            if rows.numel() > cfg.max_rows:
                rows = rows[torch.randperm(rows.numel(), generator=generator)[:cfg.max_rows]].sort().values
            if rows.numel() < 2:
                continue
            out.append({"task": TASK, "target": m, "query": [m], "metric": "uniformity",
                        "value": uniformity(unit[m][rows], cfg.t), "n": int(rows.numel())})
        return out
