"""Symile: the all-combinations loss against the PyPI reference, a dense einsum and CLIP."""

from __future__ import annotations

import math
import string

import pytest
import torch
import torch.nn.functional as F
from float64_losses import D64, build64, unit
from symile import Symile

import polyalign
from polyalign.plugins.losses.multilinear import anchor_logsumexps
from polyalign.testing import check_loss


def grads(value: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(value, inputs))


@pytest.mark.parametrize("m", [3, 4])
def test_n_squared_equals_reference_package(m):
    zs = unit(6, 5, m, seed=m)
    loss = build64("symile", 0.3, negatives="n_squared")
    names = list(string.ascii_lowercase[:m])
    ours = loss(dict(zip(names, zs))).loss
    ref = Symile("n_squared")(zs, loss.temperature.scale.detach())
    assert torch.allclose(ours, ref, rtol=1e-10, atol=0)
    for g_ours, g_ref in zip(grads(ours, zs), grads(ref, zs)):
        assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-14)


def dense_anchor_logsumexps(zs: list[torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
    m = len(zs)
    letters = string.ascii_lowercase[:m]
    t = scale * torch.einsum(",".join(f"{c}z" for c in letters) + "->" + letters, *zs)
    return torch.stack([t.logsumexp([k for k in range(m) if k != a]) for a in range(m)])


@pytest.mark.parametrize("m,chunk", [(2, None), (3, 1), (3, 5), (3, None), (4, 3), (4, 100), (5, 7)])
def test_blockwise_equals_dense_einsum(m, chunk):
    zs = unit(5, 4, m, seed=10 + m)
    scale = torch.tensor(2.5, dtype=D64, requires_grad=True)
    weights = torch.randn(m, 5, dtype=D64)
    ours = anchor_logsumexps(zs, scale, chunk)
    dense = dense_anchor_logsumexps(zs, scale)
    assert torch.allclose(ours, dense, rtol=1e-12)
    for g_ours, g_dense in zip(grads((ours * weights).sum(), zs + [scale]),
                               grads((dense * weights).sum(), zs + [scale])):
        assert torch.allclose(g_ours, g_dense, rtol=1e-10, atol=1e-13)


def test_backward_without_kept_shifts_recomputes_them(monkeypatch):
    from polyalign.plugins.losses import multilinear

    monkeypatch.setattr(multilinear, "KEEP_SHIFTS", 0)  # what large M·N does: no per-row state kept
    test_blockwise_equals_dense_einsum(4, 5)


def test_blockwise_is_stable_at_large_scale_in_float32():
    zs = [z.detach().float() for z in unit(64, 8, 3, seed=3)]
    scale = torch.tensor(100.0)
    ours = anchor_logsumexps(zs, scale, chunk=7)
    dense = dense_anchor_logsumexps([z.double() for z in zs], scale.double())
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours.double(), dense, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("negatives", ["n", "n_squared"])
def test_two_modalities_is_clip_with_the_dot_product(negatives):
    x, y = unit(7, 4, 2, seed=1)
    loss = build64("symile", 0.2, negatives=negatives)
    ours = loss({"x": x, "y": y}).loss
    logits = x @ y.T / 0.2
    labels = torch.arange(7)
    dense = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    clip = build64("clip", 0.2)({"x": x, "y": y}).loss
    assert torch.allclose(ours, dense, rtol=1e-12) and torch.allclose(ours, clip, rtol=1e-12)


def test_n_negatives_follow_the_shuffled_bank():
    zs = unit(6, 4, 3, seed=4)
    loss = build64("symile", 0.5, negatives="n")
    torch.manual_seed(123)
    ours = loss(dict(zip("abc", zs))).loss
    torch.manual_seed(123)  # the same permutations, drawn in the same order: per anchor, per other modality
    terms = []
    for k in range(3):
        others = [z for j, z in enumerate(zs) if j != k]
        bank = others[0][torch.randperm(6)] * others[1][torch.randperm(6)]
        logits = 2.0 * zs[k] @ bank.T
        pos = 2.0 * (zs[0] * zs[1] * zs[2]).sum(1)
        logits[torch.arange(6), torch.arange(6)] = pos
        terms.append(F.cross_entropy(logits, torch.arange(6)))
    assert torch.allclose(ours, torch.stack(terms).mean(), rtol=1e-12)


def test_missing_rows_use_complete_tuples_only():
    zs = unit(8, 4, 3, seed=5)
    present = {"a": torch.tensor([1, 1, 0, 1, 1, 1, 1, 1], dtype=torch.bool),
               "b": torch.tensor([1, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool),
               "c": torch.ones(8, dtype=torch.bool)}
    keep = torch.tensor([0, 1, 3, 5, 6, 7])
    loss = build64("symile", 0.3)
    masked = loss(dict(zip("abc", zs)), present).loss
    subset = loss({m: z[keep] for m, z in zip("abc", zs)}).loss
    assert torch.allclose(masked, subset, rtol=1e-12)


def test_dim_scale_starts_from_the_same_logits_and_raises_the_ceiling():
    zs = unit(6, 16, 3, seed=6)
    plain = build64("symile", 0.1, negatives="n_squared")
    scaled = polyalign.build("loss", "symile", temperature=0.1, scale="dim", negatives="n_squared",
                             modalities=["a", "b", "c"], embed_dim=16).double()
    emb = dict(zip("abc", zs))
    assert torch.allclose(plain(emb).loss, scaled(emb).loss, rtol=1e-6)  # τ is stored in float32
    assert torch.isclose(scaled.temperature.scale, torch.tensor(10.0 / 16, dtype=D64), rtol=1e-6)
    with pytest.raises(polyalign.core.errors.PolyalignError, match="embed_dim"):
        polyalign.build("loss", "symile", scale="dim", negatives="n_squared")


def test_score_is_the_product_of_queries_against_candidates():
    a, b, c = unit(5, 4, 3, seed=7)
    cand = unit(9, 4, 1, seed=8)[0]
    scores = build64("symile").score({"a": a, "c": c}, cand, "b")
    assert scores.shape == (5, 9)
    assert torch.allclose(scores[2, 4], (a[2] * c[2] * cand[4]).sum())


@pytest.mark.slow
def test_symile_options_keep_the_loss_contract():
    check_loss("symile", scale="dim", negatives="n_squared", chunk_size=5)
    # n negatives are random banks drawn in modality order: every property but that order holds
    check_loss("symile", negatives="n", skip=["modality order"])


def dense_per_modality(zs: list[torch.Tensor], tau: float) -> torch.Tensor:
    """For each m: symmetric CE of z_m against the unit direction of the product of the others."""
    labels = torch.arange(zs[0].shape[0])
    terms = []
    for m, z in enumerate(zs):
        rest = torch.stack([x for k, x in enumerate(zs) if k != m]).prod(0)
        if len(zs) > 2:
            rest = rest / rest.norm(dim=1, keepdim=True)
        logits = z @ rest.T / tau
        terms.append(0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)))
    return torch.stack(terms).mean()


@pytest.mark.parametrize("m,chunk", [(2, None), (3, None), (4, 3), (6, None)])
def test_per_modality_equals_its_formula_in_float64(m, chunk):
    zs = unit(7, 5, m, seed=20 + m)
    loss = build64("symile", 0.3, negatives="per_modality", chunk_size=chunk)
    ours = loss(dict(zip(string.ascii_lowercase, zs))).loss
    dense = dense_per_modality(zs, 0.3)
    assert torch.allclose(ours, dense, rtol=1e-12)
    for g_ours, g_dense in zip(grads(ours, zs), grads(dense, zs)):
        assert torch.allclose(g_ours, g_dense, rtol=1e-10, atol=1e-13)


def test_per_modality_at_two_modalities_is_clip():
    x, y = unit(7, 4, 2, seed=2)
    ours = build64("symile", 0.2, negatives="per_modality")({"x": x, "y": y}).loss
    assert torch.allclose(ours, build64("clip", 0.2)({"x": x, "y": y}).loss, rtol=1e-12)


def test_per_modality_ranks_one_held_out_modality_as_the_multilinear_product_does():
    a, b, c, d = unit(5, 6, 4, seed=21)
    cand = unit(9, 6, 1, seed=22)[0]
    per_modality = build64("symile", negatives="per_modality")
    queries = {"a": a, "c": c, "d": d}
    scores = per_modality.score(queries, cand, "b")
    product = a * c * d
    assert torch.allclose(scores, product @ cand.T / product.norm(dim=1, keepdim=True), rtol=1e-12)
    assert torch.equal(scores.argsort(1), build64("symile", negatives="n").score(queries, cand, "b").argsort(1))


def test_auto_is_n_squared_while_affordable_and_per_modality_beyond():
    from polyalign.plugins.losses.symile import AFFORDABLE_LOGITS, resolve_negatives

    assert resolve_negatives("auto", 3, 256) == "n_squared" and 256 ** 3 <= AFFORDABLE_LOGITS
    assert resolve_negatives("auto", 3, 257) == "per_modality"
    assert resolve_negatives("auto", 6, 16) == "n_squared" and resolve_negatives("auto", 6, 17) == "per_modality"
    assert resolve_negatives("n_squared", 6, 4096) == "n_squared"  # a named scheme is never replaced
    zs = dict(zip("abcd", unit(6, 5, 4, seed=23)))
    big_batches = polyalign.build("loss", "symile", temperature=0.3, modalities=list(zs), batch_size=128).double()
    with torch.no_grad():
        big_batches.temperature.log_scale.fill_(math.log(1 / 0.3))
    assert big_batches.negatives == "per_modality"  # the recipe's batch decides, not this batch of 6
    assert torch.allclose(big_batches(zs).loss, build64("symile", 0.3, negatives="per_modality")(zs).loss, rtol=1e-12)
    assert torch.allclose(build64("symile", 0.3)(zs).loss, build64("symile", 0.3, negatives="n_squared")(zs).loss,
                          rtol=1e-12)


def test_dim_scale_is_refused_with_the_product_direction():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="negatives per_modality contrasts the direction"):
        polyalign.build("loss", "symile", scale="dim", negatives="per_modality", modalities=["a", "b", "c"],
                        embed_dim=8)


def test_per_modality_keeps_the_loss_contract():
    check_loss("symile", negatives="per_modality")
    check_loss("symile", negatives="per_modality", chunk_size=3)
