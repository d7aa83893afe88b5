"""Evaluator ``modality_gap``: the distance between the centres of two modalities' embeddings.

Contrastive models put each modality in its own region of the sphere (Liang et al., NeurIPS 2022,
"Mind the Gap"); the gap is ``‖mean z_m − mean z_n‖`` over the rows that have both modalities.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from polyalign.plugin import EvalContext, PolyalignError


class ModalityGap:
    """Distance between the centres of two modalities' embeddings (the modality gap), one row per pair."""

    name = "modality_gap"

    class Options(BaseModel):  # the options model may also be defined on the class itself
        model_config = ConfigDict(extra="forbid")
        modalities: list[str] | None = Field(None, min_length=2, description="modalities to compare in pairs "
                                                                             "(default: all of the model's)")

    def __init__(self, config: ModalityGap.Options):
        self.config = config

    def __call__(self, ctx: EvalContext) -> list[dict[str, Any]]:
        names = self.config.modalities or ctx.modalities
        unknown = [m for m in names if m not in ctx.modalities]
        if unknown:
            raise PolyalignError(f"modality_gap: {', '.join(unknown)} not among the model's modalities "
                                 f"({', '.join(ctx.modalities)})")
        embeddings, present = ctx.embeddings()  # every row of the split, embedded once and shared
        rows = []
        for m, n in combinations(names, 2):
            both = present[m] & present[n]
            if not both.any():
                continue
            gap = (embeddings[m][both].mean(dim=0) - embeddings[n][both].mean(dim=0)).norm()
            rows.append({"task": "modality_gap", "target": n, "query": [m], "metric": "gap",
                         "value": float(gap), "n": int(both.sum())})
        return rows
