"""Evaluators tested on known numbers: an EvalContext built from embeddings given in code, and a
third-party-style loss that ranks one modality only."""

from __future__ import annotations

import numpy as np
import torch

from polyalign.core.assemble import Assembled
from polyalign.core.evaluator import EvalContext
from polyalign.core.loss import Loss
from polyalign.core.model import MultiModalModel
from polyalign.plugins.encoders.vector import VectorEncoder
from polyalign.plugins.losses.clip import ClipConfig, ClipLoss


class ListDataset:
    """Samples given in code (only the test split is used)."""

    root = None

    def __init__(self, modalities, samples):
        self.modalities = tuple(modalities)
        self.samples = samples

    def split(self, name):
        return self.samples


def hand_made_context(emb: dict[str, np.ndarray], present: dict[str, np.ndarray] | None = None,
                      labels: list | None = None, missing: str = "drop", loss: Loss | None = None) -> EvalContext:
    """An EvalContext whose embeddings are ``emb`` (no encoder runs); the raw value of modality m
    in row i is ``[i]``, so every row's target is a distinct candidate; the score is CLIP's
    sum of dot products (or ``loss``'s rule)."""
    names = list(emb)
    n = next(iter(emb.values())).shape[0]
    present = present or {m: np.ones(n, bool) for m in names}
    samples = []
    for i in range(n):
        s = {m: np.array([float(i)], np.float32) for m in names if present[m][i]}
        if labels is not None:
            s["label"] = labels[i]
        samples.append(s)
    d = next(iter(emb.values())).shape[1]
    model = MultiModalModel({m: VectorEncoder(1, []) for m in names}, d, "none", missing)
    parts = Assembled(ListDataset(names, samples), model, loss or ClipLoss(ClipConfig()))
    ctx = EvalContext(parts, "test", torch.device("cpu"), seed=0)
    ctx._cache["emb"] = ({m: torch.tensor(v, dtype=torch.float32) for m, v in emb.items()},
                         {m: torch.tensor(p) for m, p in present.items()})
    return ctx


class OneModalityLoss(ClipLoss):
    """A third-party loss written before tuple scoring: it defines score() only."""

    def score(self, queries, candidates, target):
        return sum(q @ candidates.T for q in queries.values())

    score_tuples = Loss.score_tuples  # what a loss that never heard of score_tuples inherits
