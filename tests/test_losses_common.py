"""Properties every loss plugin must have: finite, batch-permutation equivariant, key-order
invariant where symmetric, blind to absent rows, chunked equal to dense, scores of the right shape."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import polyalign
from polyalign.core.plugin_manager import default_plugins
from polyalign.testing import check_loss

D64 = torch.float64
NAMES = ["a", "b", "c"]
LOSSES = {  # name -> config used in these tests (deterministic ones only where it matters)
    "clip": {},
    "symile": {"negatives": "n_squared"},
    "gram": {"anchor": "a", "label_smoothing": 0.1},
    "mv_infonce": {},
    "mv_dhel": {},
    "siglip": {"modalities": NAMES},
    "dcl": {},
    "dclw": {},
    "align_uniform": {},
}
CHUNKED = ["clip", "dcl", "dclw", "siglip", "gram", "mv_infonce", "mv_dhel"]


def unit(n: int, d: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: F.normalize(torch.randn(n, d, generator=g, dtype=D64), dim=1).requires_grad_() for m in NAMES}


def build(name: str, **extra):
    config = {**LOSSES[name], **extra}
    if name != "align_uniform":
        config.setdefault("temperature", 0.2)
    return polyalign.build("loss", name, **config).double()


def test_all_losses_are_registered_with_help():
    comps = {c.name: c for c in default_plugins().registry.components("loss")}
    assert set(LOSSES) <= set(comps)
    assert all(comps[n].help for n in LOSSES)


@pytest.mark.parametrize("name", list(LOSSES) + ["symile_n"])
def test_finite_loss_and_gradients_in_float32(name):
    loss = polyalign.build("loss", "symile", negatives="n") if name == "symile_n" else build(name).float()
    emb = {m: z.detach().float().requires_grad_() for m, z in unit(16, 8).items()}
    out = loss(emb)
    out.loss.backward()
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert all(torch.isfinite(z.grad).all() for z in emb.values())
    assert all(math.isfinite(v) for v in out.metrics.values())


@pytest.mark.parametrize("name", list(LOSSES))
def test_batch_permutation_leaves_the_loss_unchanged(name):
    emb = unit(7, 5, seed=1)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(3))
    loss = build(name)
    assert torch.allclose(loss(emb).loss, loss({m: z[perm] for m, z in emb.items()}).loss, rtol=1e-10)


@pytest.mark.parametrize("name", list(LOSSES))
def test_modality_key_order_does_not_matter(name):
    emb = unit(6, 5, seed=2)
    reordered = {m: emb[m] for m in ["c", "a", "b"]}
    loss = build(name)
    assert torch.allclose(loss(emb).loss, loss(reordered).loss, rtol=1e-10)


@pytest.mark.parametrize("name", list(LOSSES))
def test_absent_rows_neither_change_the_loss_nor_get_gradient(name):
    emb = unit(8, 5, seed=3)
    present = {"a": torch.tensor([1, 1, 1, 0, 1, 1, 1, 1], dtype=torch.bool),
               "b": torch.tensor([1, 0, 1, 1, 1, 1, 1, 1], dtype=torch.bool),
               "c": torch.tensor([1, 1, 1, 1, 1, 1, 0, 1], dtype=torch.bool)}
    loss = build(name)
    out = loss(emb, present)
    garbage = {m: torch.where(present[m][:, None], z, torch.full_like(z, 3.0)) for m, z in emb.items()}
    assert torch.allclose(out.loss, loss(garbage, present).loss, rtol=1e-12)
    grads = torch.autograd.grad(out.loss, [emb[m] for m in NAMES])
    for m, g in zip(NAMES, grads):
        assert torch.all(g[~present[m]] == 0)
        assert g[present[m]].abs().sum() > 0


@pytest.mark.parametrize("name", [n for n in LOSSES if n != "align_uniform"])
def test_too_few_rows_give_a_zero_loss_that_still_backpropagates(name):
    emb = unit(3, 4, seed=4)
    present = {m: torch.tensor([m == "a", m == "b", m == "c"]) for m in NAMES}  # no row has two modalities
    out = build(name)(emb, present)
    assert float(out.loss.detach()) == 0.0
    out.loss.backward()


@pytest.mark.parametrize("name", CHUNKED)
@pytest.mark.parametrize("chunk", [1, 4])
def test_chunked_equals_dense_values_and_gradients(name, chunk):
    emb = unit(10, 6, seed=5)
    present = {m: torch.ones(10, dtype=torch.bool) for m in NAMES}
    present["b"][2] = False
    dense, chunked = build(name), build(name, chunk_size=chunk)
    chunked.load_state_dict(dense.state_dict())
    out_d, out_c = dense(emb, present), chunked(emb, present)
    assert torch.allclose(out_d.loss, out_c.loss, rtol=1e-12)
    params_d, params_c = list(dense.parameters()), list(chunked.parameters())
    inputs = [emb[m] for m in NAMES]
    for g_d, g_c in zip(torch.autograd.grad(out_d.loss, inputs + params_d),
                        torch.autograd.grad(out_c.loss, inputs + params_c)):
        assert torch.allclose(g_d, g_c, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", list(LOSSES))
def test_score_ranks_candidates_for_any_query_subset(name):
    emb = unit(5, 6, seed=6)
    loss = build(name)
    for query in (["a"], ["a", "c"]):
        scores = loss.score({q: emb[q] for q in query}, emb["b"], "b")
        assert scores.shape == (5, 5) and torch.isfinite(scores).all()
    perm = torch.tensor([4, 2, 0, 1, 3])  # reordering candidates reorders the score columns
    full = loss.score({"a": emb["a"], "c": emb["c"]}, emb["b"], "b")
    assert torch.allclose(loss.score({"a": emb["a"], "c": emb["c"]}, emb["b"][perm], "b"), full[:, perm])


EXACT_INNER_PRODUCT = {"clip", "symile", "mv_infonce", "mv_dhel", "dcl"}  # the score is v · c itself


@pytest.mark.parametrize("name", list(LOSSES))
def test_inner_product_query_ranks_candidates_as_the_score_does(name):
    emb = unit(40, 6, seed=8)
    loss = build(name)
    for query in (["a"], ["c"], ["a", "c"]):
        queries = {q: emb[q][:4] for q in query}
        vectors = loss.inner_product_query(queries, "b")
        if name in ("gram", "align_uniform") or (name == "siglip" and len(query) > 1):  # no such form
            assert vectors is None
            continue
        assert vectors.shape == (4, 6)
        scores, products = loss.score(queries, emb["b"], "b"), vectors @ emb["b"].T
        assert torch.equal(scores.argsort(dim=1), products.argsort(dim=1)), (name, query)
        if name in EXACT_INNER_PRODUCT:
            assert torch.allclose(scores, products, rtol=1e-12, atol=1e-12)


def test_a_weighted_sum_of_losses_has_the_inner_product_form_of_its_scaled_terms():
    from polyalign.core.loss import WeightedLoss

    emb = unit(8, 6, seed=9)
    queries = {q: z[:4] for q, z in emb.items() if q != "b"}
    clip, symile = build("clip", temperature=0.1), build("symile", temperature=0.25)
    with_regulariser = WeightedLoss({"align_uniform": build("align_uniform"), "clip": clip},
                                    {"align_uniform": 0.1, "clip": 1})
    assert torch.allclose(with_regulariser.inner_product_query(queries, "b"), 10 * (queries["a"] + queries["c"]),
                          rtol=1e-6)
    experts = WeightedLoss({"clip": clip, "symile": symile}, {"clip": 1, "symile": 2})
    vectors = experts.inner_product_query(queries, "b")
    assert torch.allclose(vectors @ emb["b"].T, experts.score(queries, emb["b"], "b"), rtol=1e-10)
    with_siglip = WeightedLoss({"clip": clip, "siglip": build("siglip")}, {"clip": 1, "siglip": 1})
    assert with_siglip.inner_product_query(queries, "b") is None
    assert "siglip is no exact inner product" in with_siglip.inner_product_refusal()
    chosen = WeightedLoss({"clip": clip, "siglip": build("siglip")}, {"clip": 1, "siglip": 1}, score_with="clip")
    assert torch.equal(chosen.inner_product_query(queries, "b"), queries["a"] + queries["c"])


@pytest.mark.parametrize("name", [n for n in LOSSES if n != "align_uniform"])
def test_metrics_report_the_temperature_and_per_term_losses(name):
    out = build(name)(unit(6, 4, seed=7))
    assert any(k.startswith("temperature") for k in out.metrics)
    assert len(out.metrics) >= 2


@pytest.mark.parametrize("recipe", ["xor-symile", "xor-gram", "xor-mv-infonce"])
def test_xor_recipes_validate_and_open_with_their_command(recipe):
    from conftest import RECIPES

    path = RECIPES / f"{recipe}.yaml"
    assert path.read_text().splitlines()[0] == f"# polyalign train recipes/{recipe}.yaml"
    loaded = polyalign.load_recipe(path)
    assert loaded.description and list(loaded.modalities) == ["a", "b", "c"]
    assert loaded.eval[0].options()["target"] == "b"


def test_tiny_symile_run_trains_and_scores_with_the_multilinear_product(tmp_path, tiny_xor):
    import json

    from conftest import RECIPES

    run = polyalign.train(RECIPES / "xor-symile.yaml", out=tmp_path, overrides=tiny_xor)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if r.get("kind") == "step"]
    assert steps and {"loss_a", "loss_b", "loss_c", "temperature"} <= set(steps[-1])
    rows = json.loads((run / "eval" / "report.json").read_text())
    assert any(r["metric"] == "accuracy" and r["target"] == "b" for r in rows)


@pytest.mark.parametrize("name", default_plugins().registry.names("loss"))
def test_every_registered_loss_keeps_the_loss_contract_at_its_defaults(name):
    check_loss(name)
