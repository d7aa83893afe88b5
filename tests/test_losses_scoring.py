"""The scoring contract: every built-in loss ranks candidate tuples as its formula says (checked
against a brute-force loop over query and candidate rows), consistently with ``score``; a loss
that only ranks one modality says so."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from float64_losses import D64, build64, unit
from hand_made import OneModalityLoss

import polyalign
from polyalign.core.errors import PluginError
from polyalign.core.loss import Loss, score_candidates
from polyalign.plugins.losses.clip import ClipConfig

NAMES = ["a", "b", "c", "d"]
LOSSES = {"clip": {}, "dcl": {}, "dclw": {}, "mv_infonce": {}, "mv_dhel": {}, "symile": {}, "gram": {},
          "siglip": {"modalities": NAMES}, "align_uniform": {}, "symile_per_modality": {"negatives": "per_modality"}}


def dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).sum()


def pairwise(f):
    """A score summing ``f(modality q, vector, modality c, vector)`` over query x candidate modalities."""
    def score(loss, q: dict[str, torch.Tensor], c: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(f(loss, mq, zq, mc, zc) for mq, zq in q.items() for mc, zc in c.items())
    return score


def siglip_pair(loss, mq, zq, mc, zc):
    key = loss.pair_keys[frozenset((mq, mc))]
    return F.logsigmoid(loss.scales[key].scale * dot(zq, zc) + loss.biases[key])


def multilinear(loss, q, c):
    prod = torch.ones_like(next(iter(q.values())))
    for z in [*q.values(), *c.values()]:
        prod = prod * z
    return prod.sum()


def product_directions(loss, q, c):
    """Symile after per_modality: a side of several modalities enters as the direction of its product."""
    def side(zs):
        prod = torch.stack(zs).prod(0)
        return prod / prod.norm() if len(zs) > 1 else prod
    return dot(side(list(q.values())), side(list(c.values())))


def minus_volume(loss, q, c):
    v = torch.stack([*q.values(), *c.values()])
    return -torch.sqrt(torch.linalg.det(v @ v.T).clamp_min(0))


BRUTE = {  # loss -> score of ONE query tuple and ONE candidate tuple, from the formula in docs/losses.md
    **{n: pairwise(lambda loss, mq, zq, mc, zc: dot(zq, zc)) for n in ("clip", "dcl", "dclw", "mv_infonce", "mv_dhel")},
    "siglip": pairwise(siglip_pair),
    "align_uniform": pairwise(lambda loss, mq, zq, mc, zc: -((zq - zc) ** 2).sum()),
    "symile": multilinear,
    "symile_per_modality": product_directions,
    "gram": minus_volume,
}


def embeddings(seed: int = 0, n: int = 5) -> dict[str, torch.Tensor]:
    return {m: z.detach() for m, z in zip(NAMES, unit(n, 6, len(NAMES), seed=seed))}


def build(name: str):
    plugin = name.split("_per_")[0]
    loss = build64(plugin, 0.2, **LOSSES[name]) if name != "align_uniform" else \
        polyalign.build("loss", name).double()
    if name == "siglip":  # a distinct (t, b) per pair, so using the wrong pair would show
        with torch.no_grad():
            for k, key in enumerate(sorted(loss.biases)):
                loss.biases[key].fill_(-1.0 - 0.5 * k)
                loss.scales[key].log_scale.fill_(math.log(2.0 + k))
    return loss


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("query, cand", [(["a"], ["b"]), (["a", "c"], ["b"]), (["a"], ["b", "d"]),
                                         (["a", "c"], ["b", "d"]), (["c"], ["a", "b", "d"])])
def test_tuple_scores_equal_a_brute_force_loop(name, query, cand):
    emb = embeddings(seed=len(query) + 3 * len(cand))
    loss = build(name)
    q = {m: emb[m][:4] for m in query}
    c = {m: emb[m] for m in cand}
    got = score_candidates(loss, q, c, name)
    want = torch.stack([torch.stack([BRUTE[name](loss, {m: z[i] for m, z in q.items()},
                                                 {m: z[j] for m, z in c.items()}) for j in range(5)])
                        for i in range(4)])
    assert got.shape == (4, 5)
    assert torch.allclose(got, want.detach(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(LOSSES))
def test_score_is_score_tuples_with_one_candidate_and_both_directions_transpose(name):
    emb = embeddings(seed=11)
    loss = build(name)
    queries = {"a": emb["a"], "c": emb["c"]}
    one = loss.score(queries, emb["b"], "b")
    assert torch.equal(one, loss.score_tuples(queries, {"b": emb["b"]}))
    forward = loss.score_tuples(queries, {"b": emb["b"], "d": emb["d"]})
    backward = loss.score_tuples({"b": emb["b"], "d": emb["d"]}, queries)
    assert torch.allclose(forward, backward.T, rtol=1e-10, atol=1e-12)


def test_gram_volume_of_tuples_is_chunked_exactly():
    from polyalign.plugins.losses.volume import union_volume_sq

    left = torch.stack(unit(7, 6, 2, seed=40), 1).detach()
    right = torch.stack(unit(5, 6, 3, seed=41), 1).detach()
    whole = union_volume_sq(left, right)
    assert torch.allclose(union_volume_sq(left, right, budget=1), whole, rtol=1e-12)
    v = torch.cat([left[3], right[2]])
    assert torch.allclose(whole[3, 2], torch.linalg.det(v @ v.T), rtol=1e-10)


def test_a_loss_that_defines_only_score_keeps_working_and_says_it_cannot_rank_tuples():
    emb = embeddings(seed=12)
    loss = OneModalityLoss(ClipConfig())
    scores = score_candidates(loss, {"a": emb["a"]}, {"b": emb["b"]}, "mine")
    assert torch.allclose(scores, emb["a"] @ emb["b"].T)
    assert torch.equal(loss.score_tuples({"a": emb["a"]}, {"b": emb["b"]}), scores)
    with pytest.raises(PluginError, match=r"loss 'mine' ranks candidates of one modality .* cannot rank "
                                          r"candidates made of b\+d"):
        score_candidates(loss, {"a": emb["a"]}, {"b": emb["b"], "d": emb["d"]}, "mine")


def test_a_loss_without_any_scoring_rule_is_named():
    class NoScore(Loss):
        pass

    with pytest.raises(TypeError, match="NoScore defines no scoring rule"):
        NoScore().score({"a": torch.zeros(1, 2)}, torch.zeros(3, 2), "b")


def test_weighted_loss_scores_with_the_sum_of_its_terms_scaled_logits():
    from polyalign.core.loss import WeightedLoss

    emb = embeddings(seed=13)
    symile, clip = build64("symile", 0.2), build64("clip", 0.05)
    loss = WeightedLoss({"symile": symile, "clip": clip}, {"symile": 1.0, "clip": 0.5})
    q, c = {"a": emb["a"]}, {"b": emb["b"], "c": emb["c"]}
    experts = 1.0 * 5.0 * symile.score_tuples(q, c) + 0.5 * 20.0 * clip.score_tuples(q, c)
    assert torch.allclose(score_candidates(loss, q, c, "symile+clip"), experts, rtol=1e-6)  # τ stored in float32
    one = 5.0 * symile.score(q, emb["b"], "b") + 10.0 * clip.score(q, emb["b"], "b")
    assert torch.allclose(loss.score(q, emb["b"], "b"), one, rtol=1e-6)
    chosen = WeightedLoss({"symile": symile, "clip": clip}, {"symile": 1.0, "clip": 0.5}, score_with="clip")
    assert torch.equal(score_candidates(chosen, q, c, "symile+clip"), clip.score_tuples(q, c))


def test_a_regulariser_is_left_out_of_the_product_of_experts():
    from polyalign.core.loss import WeightedLoss

    emb = embeddings(seed=15)
    clip = build64("clip", 0.1)
    loss = WeightedLoss({"clip": clip, "align_uniform": polyalign.build("loss", "align_uniform").double()},
                        {"clip": 1.0, "align_uniform": 0.1})
    q = {"a": emb["a"], "c": emb["c"]}
    assert torch.allclose(loss.score(q, emb["b"], "b"), 10.0 * clip.score(q, emb["b"], "b"), rtol=1e-6)


def test_a_sum_of_terms_that_cannot_rank_tuples_names_them():
    from polyalign.core.loss import WeightedLoss

    emb = embeddings(seed=16)
    loss = WeightedLoss({"clip": build64("clip"), "one": OneModalityLoss(ClipConfig())}, {"clip": 1.0, "one": 1.0})
    with pytest.raises(PluginError, match="'one'.*cannot rank candidates made of b\\+c"):
        score_candidates(loss, {"a": emb["a"]}, {"b": emb["b"], "c": emb["c"]}, "clip+one")


def test_candidate_rows_must_line_up():
    emb = embeddings(seed=14)
    with pytest.raises(polyalign.core.errors.PolyalignError, match="one row per candidate"):
        score_candidates(build("clip"), {"a": emb["a"]}, {"b": emb["b"], "c": emb["c"][:3]}, "clip")


def test_float64_inputs_stay_float64():
    emb = embeddings(seed=15)
    for name in LOSSES:
        out = build(name).score_tuples({"a": emb["a"]}, {"b": emb["b"], "c": emb["c"]})
        assert out.dtype == D64, name


def test_a_recipe_picks_the_scoring_term_with_score_with(tmp_path):
    from conftest import RECIPES

    from polyalign.core.assemble import build_loss
    from polyalign.core.errors import RecipeError
    from polyalign.core.plugin_manager import default_plugins

    both = "loss=[{plugin: clip}, {plugin: symile, weight: 0.5}]"
    loss = build_loss(polyalign.load_recipe(RECIPES / "xor-clip.yaml", [both]), default_plugins())
    assert loss.score_with is None and list(loss.scoring_terms()) == ["clip", "symile"]
    chosen = "loss=[{plugin: clip}, {plugin: symile, weight: 0.5, score_with: true}]"
    loss = build_loss(polyalign.load_recipe(RECIPES / "xor-clip.yaml", [chosen]), default_plugins())
    assert list(loss.scoring_terms()) == ["symile"]
    with pytest.raises(RecipeError, match="score_with is set on loss nodes 0, 1"):
        polyalign.load_recipe(RECIPES / "xor-clip.yaml",
                              ["loss=[{plugin: clip, score_with: true}, {plugin: symile, score_with: true}]"])
