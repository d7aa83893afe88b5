"""Evaluator ``embedding_geometry``: modality gap, alignment and uniformity checked against their
formulas, written out by hand in float64 on small sets of embeddings."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from polyalign.core.assemble import Assembled
from polyalign.core.evaluator import EvalContext
from polyalign.core.model import MultiModalModel
from polyalign.plugins.encoders.vector import VectorConfig, VectorEncoder
from polyalign.plugins.evaluators.embedding_geometry import EmbeddingGeometry, EmbeddingGeometryConfig
from polyalign.plugins.losses.clip import ClipConfig, ClipLoss
from polyalign.testing import check_evaluator

D = 5


class Rows:
    root = None
    modalities = ("a", "b", "c")

    def __init__(self, n):
        self.samples = [{"a": [0.0], "b": [0.0], "c": [0.0], "label": i % 2} for i in range(n)]

    def split(self, name):
        return self.samples


def context(emb: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> EvalContext:
    n = len(next(iter(emb.values())))
    model = MultiModalModel({m: VectorEncoder(VectorConfig(dim=1, hidden=[])) for m in emb}, D, "l2")
    ctx = EvalContext(Assembled(Rows(n), model, ClipLoss(ClipConfig())), "test", torch.device("cpu"), seed=0)
    ctx._cache["emb"] = ({m: torch.tensor(v, dtype=torch.float32) for m, v in emb.items()},
                         {m: torch.tensor(p) for m, p in present.items()})
    return ctx


def unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_geometry_rows_equal_their_formulas():
    rng = np.random.default_rng(0)
    n = 7
    emb = {m: rng.normal(size=(n, D)) * 3 + shift for m, shift in (("a", 0.0), ("b", 2.0), ("c", -1.0))}
    present = {"a": np.ones(n, bool), "b": np.array([1, 1, 0, 1, 1, 1, 0], bool), "c": np.ones(n, bool)}
    rows = EmbeddingGeometry(EmbeddingGeometryConfig(alpha=3.0, t=1.5))(context(emb, present))
    got = {(r["metric"], tuple(r["query"]), r["target"]): r for r in rows}
    z = {m: unit(v.astype(np.float32).astype(np.float64)) for m, v in emb.items()}  # the float32 the model gives
    for a, b in (("a", "b"), ("a", "c"), ("b", "c")):
        keep = present[a] & present[b]
        x, y = z[a][keep], z[b][keep]
        gap = math.sqrt(sum((x[:, d].mean() - y[:, d].mean()) ** 2 for d in range(D)))
        align = np.mean([np.linalg.norm(x[i] - y[i]) ** 3.0 for i in range(len(x))])
        assert got[("modality_gap", (a,), b)]["value"] == pytest.approx(gap, rel=1e-12)
        assert got[("alignment", (a,), b)]["value"] == pytest.approx(align, rel=1e-12)
        assert got[("alignment", (a,), b)]["n"] == keep.sum()
    for m in "abc":
        x = z[m][present[m]]
        kernel = [math.exp(-1.5 * np.sum((x[i] - x[j]) ** 2)) for i, j in itertools.combinations(range(len(x)), 2)]
        assert got[("uniformity", (m,), m)]["value"] == pytest.approx(math.log(np.mean(kernel)), rel=1e-12)
    assert len(rows) == 3 * 2 + 3 and {r["task"] for r in rows} == {"embedding_geometry"}


def test_geometry_of_known_configurations():
    same = unit(np.random.default_rng(1).normal(size=(6, D)))
    rows = EmbeddingGeometry(EmbeddingGeometryConfig())(
        context({"a": same, "b": same, "c": -same}, {m: np.ones(6, bool) for m in "abc"}))
    got = {(r["metric"], r["query"][0], r["target"]): r["value"] for r in rows}
    assert got[("alignment", "a", "b")] == pytest.approx(0.0, abs=1e-12)  # identical pairs
    assert got[("modality_gap", "a", "b")] == pytest.approx(0.0, abs=1e-12)
    assert got[("alignment", "a", "c")] == pytest.approx(4.0, rel=1e-6)  # antipodal: ||x - (-x)||^2 = 4
    assert got[("modality_gap", "a", "c")] == pytest.approx(2 * np.linalg.norm(same.mean(0)), rel=1e-6)


def test_geometry_keeps_the_evaluator_contract():
    check_evaluator("embedding_geometry")
