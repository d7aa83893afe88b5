"""Pairwise losses (clip, dcl, dclw, siglip, align_uniform) against dense formulas, reference code and open_clip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from float64_losses import D64, build64, unit
from open_clip.loss import ClipLoss as OpenClipLoss
from open_clip.loss import SigLipLoss as OpenSigLipLoss

import polyalign
from polyalign.core.errors import PolyalignError
from polyalign.testing import check_loss


def test_clip_equals_two_line_infonce_and_open_clip():
    x, y = unit(9, 5, 2, seed=1)
    ours = build64("clip", 0.1)({"x": x, "y": y}).loss
    logits, labels = x @ y.T / 0.1, torch.arange(9)
    dense = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    reference = OpenClipLoss()(x, y, torch.tensor(10.0, dtype=D64))
    assert torch.allclose(ours, dense, rtol=1e-12) and torch.allclose(ours, reference, rtol=1e-12)
    for g_ours, g_ref in zip(torch.autograd.grad(ours, [x, y]), torch.autograd.grad(reference, [x, y])):
        assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-14)


def test_clip_is_the_mean_over_pairs_of_the_graph():
    a, b, c = unit(6, 4, 3, seed=2)
    pair = lambda x, y: build64("clip", 0.2)({"x": x, "y": y}).loss  # noqa: E731
    full = build64("clip", 0.2)({"a": a, "b": b, "c": c}).loss
    star = build64("clip", 0.2, pairs="star", anchor="b")({"a": a, "b": b, "c": c}).loss
    assert torch.allclose(full, (pair(a, b) + pair(a, c) + pair(b, c)) / 3, rtol=1e-12)
    assert torch.allclose(star, (pair(b, a) + pair(b, c)) / 2, rtol=1e-12)


LOG_1E_45 = math.log(1e-45)  # the reference masks each anchor's own rows by adding this, not -inf


def reference_dcl_one_way(z1, z2, tau, weight_fn=None):
    """The DCL reference code (raminnakhli/Decoupled-Contrastive-Learning, loss/dcl.py), step by step:
    the cross-view similarities, the positive term (times the weight), then the logsumexp over the
    in-view and cross-view similarities with each anchor's own two entries masked."""
    cross = z1 @ z2.T
    positive = -torch.diag(cross) / tau
    if weight_fn is not None:
        positive = positive * weight_fn(z1, z2)
    similarities = torch.cat([z1 @ z1.T, cross], dim=1) / tau
    mask = torch.eye(z1.shape[0], dtype=z1.dtype).repeat(1, 2)
    return (positive + torch.logsumexp(similarities + mask * LOG_1E_45, dim=1)).mean()


def vmf_weight(sigma):
    """DCLW's weight as in the reference: 2 - N * softmax(<z1_i, z2_i> / sigma)."""
    return lambda z1, z2: 2 - z1.shape[0] * torch.softmax((z1 * z2).sum(dim=1) / sigma, dim=0)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_dcl_equals_the_reference_code_values_and_gradients(tau):
    x, y = unit(9, 5, 2, seed=3)
    ours = build64("dcl", tau)({"x": x, "y": y}).loss
    ref = reference_dcl_one_way(x, y, tau) + reference_dcl_one_way(y, x, tau)  # the reference's training step
    assert torch.allclose(ours, ref, rtol=1e-12)
    for g_ours, g_ref in zip(torch.autograd.grad(ours, [x, y]), torch.autograd.grad(ref, [x, y])):
        assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-14)


def test_dclw_equals_the_reference_code_with_the_weight_taken_as_a_constant():
    x, y = unit(8, 5, 2, seed=4)
    ours = build64("dclw", 0.2)({"x": x, "y": y}).loss
    plain = reference_dcl_one_way(x, y, 0.2, vmf_weight(0.5)) + reference_dcl_one_way(y, x, 0.2, vmf_weight(0.5))
    assert torch.allclose(ours, plain, rtol=1e-12)  # the same value
    constant = lambda a, b: vmf_weight(0.5)(a.detach(), b.detach())  # noqa: E731  (lightly's detached weight)
    ref = reference_dcl_one_way(x, y, 0.2, constant) + reference_dcl_one_way(y, x, 0.2, constant)
    for g_ours, g_ref in zip(torch.autograd.grad(ours, [x, y]), torch.autograd.grad(ref, [x, y])):
        assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-14)
    g_through_weight = torch.autograd.grad(plain, [x])[0]
    assert not torch.allclose(torch.autograd.grad(build64("dclw", 0.2)({"x": x, "y": y}).loss, [x])[0],
                              g_through_weight, rtol=1e-6)  # the stated difference is real


def test_dcl_cross_modal_keeps_only_the_other_modality_as_negatives():
    x, y = unit(7, 4, 2, seed=5)
    ours = build64("dcl", 0.2, negatives="cross_modal")({"x": x, "y": y}).loss
    terms = []
    for s in (x @ y.T / 0.2, y @ x.T / 0.2):
        for i in range(7):
            neg = torch.stack([s[i, j] for j in range(7) if j != i])
            terms.append(torch.logsumexp(neg, 0) - s[i, i])
    assert torch.allclose(ours, 2 * torch.stack(terms).mean(), rtol=1e-12)  # two directions, summed


def test_dcl_over_three_modalities_is_the_mean_over_pairs():
    a, b, c = unit(6, 4, 3, seed=6)
    pair = lambda u, v: reference_dcl_one_way(u, v, 0.3) + reference_dcl_one_way(v, u, 0.3)  # noqa: E731
    ours = build64("dcl", 0.3)({"a": a, "b": b, "c": c}).loss
    assert torch.allclose(ours, (pair(a, b) + pair(a, c) + pair(b, c)) / 3, rtol=1e-12)


def test_siglip_equals_open_clip_sigmoid_loss_per_pair():
    a, b, c = unit(8, 4, 3, seed=4)
    loss = build64("siglip", 0.1, modalities=["a", "b", "c"], bias=-3.0)
    with torch.no_grad():
        loss.biases["a-c"].fill_(-1.5)
        loss.scales["b-c"].log_scale.fill_(math.log(4.0))
    ours = loss({"a": a, "b": b, "c": c}).loss
    ref = OpenSigLipLoss()
    t = lambda v: torch.tensor(v, dtype=D64)  # noqa: E731
    expected = (ref(a, b, t(10.0), t(-3.0)) + ref(a, c, t(10.0), t(-1.5)) + ref(b, c, t(4.0), t(-3.0))) / 3
    assert torch.allclose(ours, expected, rtol=1e-12)
    assert {k for k, _ in loss.named_parameters()} >= {"biases.a-b", "scales.b-c.log_scale"}


def test_siglip_needs_the_modalities():
    with pytest.raises(polyalign.core.errors.PolyalignError, match="modalities"):
        polyalign.build("loss", "siglip")


def test_align_uniform_equals_wang_isola_definitions():
    x, y = unit(6, 3, 2, seed=5)
    out = polyalign.build("loss", "align_uniform", align_weight=0.5, uniform_weight=2.0).double()({"x": x, "y": y})
    align = (x - y).norm(dim=1).pow(2).mean()
    uniform = lambda z: torch.pdist(z, p=2).pow(2).mul(-2).exp().mean().log()  # noqa: E731
    expected = 0.5 * align + 2.0 * (uniform(x) + uniform(y)) / 2
    assert torch.allclose(out.loss, expected, rtol=1e-12)
    assert set(out.metrics) == {"align_x-y", "uniform_x", "uniform_y"}


def test_align_uniform_adds_to_another_loss_in_a_recipe(xor_clip):
    recipe = polyalign.load_recipe(xor_clip, ["loss=[{plugin: clip}, {plugin: align_uniform, weight: 0.1}]"])
    from polyalign.core.assemble import build_loss
    from polyalign.core.plugin_manager import default_plugins

    loss = build_loss(recipe, default_plugins()).double()
    zs = dict(zip("abc", unit(5, 4, 3, seed=6)))
    out = loss(zs)
    parts = build64("clip", 0.07)(zs).loss + 0.1 * polyalign.build("loss", "align_uniform").double()(zs).loss
    assert torch.allclose(out.loss, parts, rtol=1e-6)  # τ of the recipe's clip is stored in float32
    assert "align_uniform/align_a-b" in out.metrics


@pytest.mark.parametrize("name, options", [
    ("clip", {"pairs": "star", "anchor": "b"}), ("clip", {"chunk_size": 3}), ("dcl", {"chunk_size": 2}),
    ("siglip", {"bias": -3.0}), ("align_uniform", {"align_weight": 0.5, "uniform_weight": 2.0}),
])
def test_pairwise_options_keep_the_loss_contract(name, options):
    check_loss(name, **options)


def test_pair_term_names_never_collide():
    """Modalities a, a-b, b-c, c would name two CLIP terms a-b-c (and drop one); a recipe refuses '-' in
    modality names, and the loss itself refuses names that collide."""
    loss = polyalign.build("loss", "clip").double()
    z = dict(zip(("a", "a-b", "b-c", "c"), unit(4, 3, 4)))
    with pytest.raises(PolyalignError, match="give two pair terms the same name"):
        loss(z)
