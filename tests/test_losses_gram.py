"""GRAM: the Schur-complement volume against brute-force determinants, and its guards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from float64_losses import D64, build64, unit

import polyalign
from polyalign.plugins.losses.volume import det_adj, tuple_gram, volume_sq
from polyalign.testing import check_loss

NAMES = "abcde"


def brute_volume(vectors: list[torch.Tensor]) -> torch.Tensor:
    v = torch.stack(vectors)
    return torch.sqrt(torch.linalg.det(v @ v.T))


def brute_gram_loss(zs: list[torch.Tensor], tau: float, smoothing: float = 0.0,
                    present: list[list[bool]] | None = None) -> torch.Tensor:
    """Loop over (i, j) pairs, one determinant each; ``present[j][m]`` drops non-anchor vectors."""
    n = zs[0].shape[0]
    logits = torch.empty(n, n, dtype=D64)
    rows = []
    for i in range(n):
        row = []
        for j in range(n):
            others = [z[j] for k, z in enumerate(zs[1:]) if present is None or present[j][k]]
            row.append(-brute_volume([zs[0][i], *others]) / tau)
        rows.append(torch.stack(row))
    logits = torch.stack(rows)
    labels = torch.arange(n)
    return 0.5 * (F.cross_entropy(logits, labels, label_smoothing=smoothing)
                  + F.cross_entropy(logits.T, labels, label_smoothing=smoothing))


@pytest.mark.parametrize("m", [2, 3, 4, 5])
def test_loss_equals_brute_force_determinants(m):
    zs = unit(5, 6, m, seed=m)
    loss = build64("gram", 0.2, label_smoothing=0.1)
    ours = loss(dict(zip(NAMES, zs))).loss
    ref = brute_gram_loss(zs, 0.2, 0.1)
    assert torch.allclose(ours, ref, rtol=1e-10)
    for g_ours, g_ref in zip(torch.autograd.grad(ours, zs), torch.autograd.grad(ref, zs)):
        assert torch.allclose(g_ours, g_ref, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_volume_table_equals_determinants(k):
    a = unit(4, 6, 1, seed=20)[0]
    others = torch.stack(unit(3, 6, k, seed=21 + k), 1)
    det, adj = det_adj(tuple_gram(others))
    table = volume_sq(a, others, det, adj).sqrt()
    for i in range(4):
        for j in range(3):
            assert torch.allclose(table[i, j], brute_volume([a[i], *others[j]]), rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", [2, 3, 5])
def test_gradients_finite_at_exactly_aligned_positives(m, dtype):
    base = F.normalize(torch.randn(6, 8, dtype=dtype), dim=1)
    zs = [base.clone().requires_grad_() for _ in range(m)]  # every tuple perfectly aligned: Vol = 0
    loss = polyalign.build("loss", "gram", temperature=0.07).to(dtype)
    out = loss(dict(zip(NAMES, zs)))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for z in zs:
        assert torch.isfinite(z.grad).all()
    assert torch.isfinite(loss.temperature.log_scale.grad)


def test_missing_non_anchor_vectors_drop_out_of_the_volume():
    zs = unit(5, 6, 3, seed=30)
    present = {"a": torch.tensor([1, 1, 1, 1, 0], dtype=torch.bool),
               "b": torch.tensor([1, 0, 1, 1, 1], dtype=torch.bool),
               "c": torch.tensor([1, 1, 1, 0, 1], dtype=torch.bool)}
    loss = build64("gram", 0.3, label_smoothing=0.0)
    ours = loss(dict(zip("abc", zs)), present).loss
    keep = [0, 1, 2, 3]  # row 4 lacks the anchor
    flags = [[bool(present["b"][j]), bool(present["c"][j])] for j in keep]
    ref = brute_gram_loss([z[keep] for z in zs], 0.3, present=flags)
    assert torch.allclose(ours, ref, rtol=1e-10)


def test_anchor_is_configurable():
    zs = unit(5, 6, 3, seed=31)
    loss = build64("gram", 0.3, anchor="c", label_smoothing=0.0)
    ours = loss(dict(zip("abc", zs))).loss
    assert torch.allclose(ours, brute_gram_loss([zs[2], zs[0], zs[1]], 0.3), rtol=1e-10)


def reference_volume(language, *others):
    """The reference code's volume (ispamm/GRAM, utils/volume.py, volume_computation), step by step:
    the (k+1)-square Gram matrix of each (language_i, others_j) pair, then sqrt(|det|)."""
    n1, n2 = language.shape[0], others[0].shape[0]
    ll = (language * language).sum(1)[:, None].expand(-1, n2)
    lo = [language @ o.T for o in others]
    oo = [[(a * b).sum(1)[None, :].expand(n1, -1) for b in others] for a in others]
    g = torch.stack([torch.stack([ll, *lo], -1), *[torch.stack([lo[i], *oo[i]], -1) for i in range(len(others))]], -2)
    return torch.sqrt(torch.abs(torch.linalg.det(g)))


@pytest.mark.parametrize("m", [2, 3, 4])
def test_defaults_are_the_papers_text_anchor_and_label_smoothing(m):
    names = ["audio", "text", "video", "depth"][:m]
    zs = unit(6, 8, m, seed=50 + m)
    ours = build64("gram", 0.07, modalities=names)(dict(zip(names, zs))).loss
    text, others = zs[1], [z for z, n in zip(zs, names) if n != "text"]
    volume = reference_volume(text, *others) / 0.07  # the reference divides by its temperature parameter
    targets = torch.arange(6)
    ref = (F.cross_entropy(-volume, targets, label_smoothing=0.1)
           + F.cross_entropy(-volume.T, targets, label_smoothing=0.1)) / 2
    assert torch.allclose(ours, ref, rtol=1e-9)
    for g_ours, g_ref in zip(torch.autograd.grad(ours, zs), torch.autograd.grad(ref, zs)):
        assert torch.allclose(g_ours, g_ref, rtol=1e-7, atol=1e-10)


def test_without_a_text_modality_the_anchor_is_the_first():
    zs = unit(5, 6, 3, seed=60)
    ours = build64("gram", 0.2)(dict(zip("abc", zs))).loss
    assert torch.allclose(ours, brute_gram_loss(zs, 0.2, 0.1), rtol=1e-10)


def test_score_is_minus_the_volume_of_queries_and_candidate():
    a, c = unit(3, 6, 2, seed=32)
    cand = unit(4, 6, 1, seed=33)[0]
    scores = polyalign.build("loss", "gram").score({"a": a, "c": c}, cand, "b")
    assert scores.shape == (3, 4)
    assert torch.allclose(scores[1, 2], -brute_volume([a[1], c[1], cand[2]]), rtol=1e-10)


@pytest.mark.parametrize("m,chunk", [(2, None), (3, None), (4, 2)])
def test_per_modality_is_the_mean_over_every_anchor_of_brute_force_determinants(m, chunk):
    zs = unit(5, 6, m, seed=40 + m)
    loss = build64("gram", 0.2, label_smoothing=0.1, negatives="per_modality", chunk_size=chunk)
    ours = loss(dict(zip(NAMES, zs))).loss
    ref = torch.stack([brute_gram_loss([zs[a], *(z for k, z in enumerate(zs) if k != a)], 0.2, 0.1)
                       for a in range(m)]).mean()
    assert torch.allclose(ours, ref, rtol=1e-10)
    for g_ours, g_ref in zip(torch.autograd.grad(ours, zs), torch.autograd.grad(ref, zs)):
        assert torch.allclose(g_ours, g_ref, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("options", [{"anchor": "b", "label_smoothing": 0.1}, {"chunk_size": 3},
                                     {"negatives": "per_modality"}])
@pytest.mark.slow
def test_gram_options_keep_the_loss_contract(options):
    check_loss("gram", **options)
