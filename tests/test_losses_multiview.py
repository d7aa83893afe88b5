"""MV-InfoNCE and MV-DHEL against literal loop implementations of the formulas."""

from __future__ import annotations

import math

import pytest
import torch
from float64_losses import build64, unit

import polyalign
from polyalign.testing import check_loss

NAMES = "abcdefgh"


def all_true(n: int, m: int) -> list[list[bool]]:
    return [[True] * n for _ in range(m)]


def loop_mv_infonce(zs, tau, present):
    """−mean_i log[Σ_{l≠l'} e^{s(z_il,z_il')} / Σ_l Σ_{(j,m)≠(i,l)} e^{s(z_il,z_jm)}], present entries only."""
    m, n = len(zs), zs[0].shape[0]
    s = lambda x, y: (x * y).sum() / tau  # noqa: E731
    terms = []
    for i in range(n):
        views = [l for l in range(m) if present[l][i]]
        if len(views) < 2:
            continue
        num = sum(torch.exp(s(zs[l][i], zs[k][i])) for l in views for k in views if k != l)
        den = sum(torch.exp(s(zs[l][i], zs[k][j])) for l in views for k in range(m) for j in range(n)
                  if present[k][j] and (j, k) != (i, l))
        terms.append(-torch.log(num / den))
    return torch.stack(terms).mean()


def loop_mv_dhel(zs, tau, present):
    """−mean_i log[Σ_{l<l'} e^{s(z_il,z_il')} / Π_l Σ_{j≠i} e^{s(z_il,z_jl)}], present entries only."""
    m, n = len(zs), zs[0].shape[0]
    s = lambda x, y: (x * y).sum() / tau  # noqa: E731
    terms = []
    for i in range(n):
        views = [l for l in range(m) if present[l][i]]
        if len(views) < 2:
            continue
        num = sum(torch.exp(s(zs[l][i], zs[k][i])) for a, l in enumerate(views) for k in views[a + 1:])
        den = 1.0
        for l in views:
            den = den * sum(torch.exp(s(zs[l][i], zs[l][j])) for j in range(n) if j != i and present[l][j])
        terms.append(-torch.log(num / den))
    return torch.stack(terms).mean()


LOOPS = {"mv_infonce": loop_mv_infonce, "mv_dhel": loop_mv_dhel}


@pytest.mark.parametrize("name", ["mv_infonce", "mv_dhel"])
@pytest.mark.parametrize("m", [2, 3, 4])
def test_equals_literal_loop(name, m):
    zs = unit(5, 4, m, seed=m)
    loss = build64(name, 0.3)
    ours = loss(dict(zip(NAMES, zs))).loss
    ref = LOOPS[name](zs, 0.3, all_true(5, m))
    assert torch.allclose(ours, ref, rtol=1e-10)
    for g_ours, g_ref in zip(torch.autograd.grad(ours, zs), torch.autograd.grad(ref, zs)):
        assert torch.allclose(g_ours, g_ref, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ["mv_infonce", "mv_dhel"])
@pytest.mark.parametrize("chunk", [None, 3])
def test_missing_entries_equal_literal_loop(name, chunk):
    zs = unit(6, 4, 3, seed=40)
    flags = [[1, 1, 0, 1, 1, 0], [1, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 1]]
    present = {m: torch.tensor(f, dtype=torch.bool) for m, f in zip("abc", flags)}
    loss = build64(name, 0.4, chunk_size=chunk)
    ours = loss(dict(zip("abc", zs)), present).loss
    ref = LOOPS[name](zs, 0.4, [[bool(v) for v in f] for f in flags])
    assert torch.allclose(ours, ref, rtol=1e-10)
    for g_ours, g_ref in zip(torch.autograd.grad(ours, zs), torch.autograd.grad(ref, zs)):
        assert torch.allclose(g_ours, g_ref, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ["mv_infonce", "mv_dhel"])
def test_finite_at_small_temperature_with_eight_modalities_in_float32(name):
    zs = unit(32, 16, 8, seed=41, dtype=torch.float32)
    loss = polyalign.build("loss", name, temperature=0.01)
    out = loss(dict(zip(NAMES, zs)))
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(z.grad).all() for z in zs)
    exact = build64(name, 0.01)({m: z.detach().double()
                                                                        for m, z in zip(NAMES, zs)}).loss
    assert math.isclose(float(out.loss.detach()), float(exact.detach()), rel_tol=1e-4)


@pytest.mark.parametrize("name", ["mv_infonce", "mv_dhel"])
@pytest.mark.slow
def test_multiview_losses_keep_the_loss_contract_chunked(name):
    check_loss(name, chunk_size=3, modality_counts=[2, 3, 4, 5, 8])
