"""A list of losses gives each scoring term its own embedding space (issue 29): the model's heads
map to one block per term, each normalised on its own, and the weighted sum trains and scores each
term on its block. Checked in float64 against the formulas, and by a tiny training in which the
shared space loses the joint bits and the per-term spaces keep them."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import RECIPES
from float64_losses import build64, unit

import polyalign
from polyalign.core.assemble import build_loss, build_model
from polyalign.core.loss import WeightedLoss, score_candidates
from polyalign.core.model import MultiModalModel
from polyalign.core.plugin_manager import default_plugins

BOTH = "loss=[{plugin: clip}, {plugin: symile}]"
EXAMPLES = {m: [0.0] * 5 for m in "abc"}  # one XOR vector per modality (d_v = 5)


def per_term_sum(d: int = 8, seed: int = 0) -> tuple[WeightedLoss, torch.nn.Module, torch.nn.Module]:
    clip, symile = build64("clip", 0.05), build64("symile", 0.1)
    return WeightedLoss({"clip": clip, "symile": symile}, {"clip": 1.0, "symile": 0.5},
                        spaces={"clip": 0, "symile": 1}), clip, symile


def two_blocks(n: int, d: int, names: str, seed: int) -> dict[str, torch.Tensor]:
    """Embeddings of ``2d`` columns: two unit blocks of ``d`` per row, as the model makes them."""
    first, second = unit(n, d, len(names), seed), unit(n, d, len(names), seed + 1)
    return {m: torch.cat([a, b], dim=1) for m, a, b in zip(names, first, second)}


def test_the_score_is_the_sum_of_each_terms_scaled_score_on_its_own_block():
    loss, clip, symile = per_term_sum()
    emb = two_blocks(7, 8, "abc", seed=3)
    a, b, c = (emb[m] for m in "abc")
    # by the formulas: clip = sum of cosines of block 0, symile = MIP of block 1; logits = score / τ
    clip_part = (a[:, :8] @ b[:, :8].T + c[:, :8] @ b[:, :8].T) / 0.05
    symile_part = (a[:, 8:] * c[:, 8:]) @ b[:, 8:].T / 0.1
    expected = 1.0 * clip_part + 0.5 * symile_part
    got = score_candidates(loss, {"a": a, "c": c}, {"b": b}, "clip+symile")
    assert got.dtype == torch.float64
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    # one inner product: the concatenated scaled query vectors against the whole candidate
    vectors = loss.inner_product_query({"a": a, "c": c}, "b")
    assert vectors.shape == (7, 16)
    assert torch.allclose(vectors @ b.T, expected, rtol=1e-12, atol=1e-12)
    # score_with one term: that term alone, on its block
    alone = WeightedLoss({"clip": clip, "symile": symile}, {"clip": 1.0, "symile": 0.5}, score_with="symile",
                         spaces={"clip": 0, "symile": 1})
    assert torch.allclose(alone.score({"a": a, "c": c}, b, "b"), (a[:, 8:] * c[:, 8:]) @ b[:, 8:].T, rtol=1e-12)
    assert torch.allclose(alone.inner_product_query({"a": a, "c": c}, "b") @ b.T,
                          (a[:, 8:] * c[:, 8:]) @ b[:, 8:].T, rtol=1e-12)


def test_each_term_trains_on_its_own_block_only():
    loss, clip, symile = per_term_sum()
    emb = two_blocks(9, 8, "abc", seed=5)
    out = loss(emb)
    first = {m: z[:, :8] for m, z in emb.items()}
    second = {m: z[:, 8:] for m, z in emb.items()}
    expected = 1.0 * clip(first).loss + 0.5 * symile(second).loss
    assert torch.allclose(out.loss, expected, rtol=1e-12)
    grads = torch.autograd.grad(clip(first).loss, [emb["a"]], allow_unused=True)[0]
    assert grads[:, 8:].abs().max() == 0 and grads[:, :8].abs().max() > 0  # clip never touches symile's block


def test_a_regulariser_applies_to_every_block():
    clip = build64("clip", 0.05)
    reg = polyalign.build("loss", "align_uniform").double()
    symile = build64("symile", 0.1)
    loss = WeightedLoss({"clip": clip, "symile": symile, "align_uniform": reg},
                        {"clip": 1.0, "symile": 1.0, "align_uniform": 0.1}, spaces={"clip": 0, "symile": 1})
    emb = two_blocks(6, 8, "abc", seed=8)
    blocks = [{m: z[:, i * 8:(i + 1) * 8] for m, z in emb.items()} for i in range(2)]
    expected = clip(blocks[0]).loss + symile(blocks[1]).loss + 0.1 * (reg(blocks[0]).loss + reg(blocks[1]).loss) / 2
    assert torch.allclose(loss(emb).loss, expected, rtol=1e-12)


@pytest.mark.parametrize("normalize", ["l2", "layernorm"])
def test_the_model_normalises_each_block_on_its_own(normalize):
    comp = default_plugins().registry.get("encoder", "vector")
    enc = comp.create(comp.make_config({"dim": 5, "hidden": []}), modality="a", example=None, root=None)
    model = MultiModalModel({"a": enc}, embed_dim=4, normalize=normalize, spaces=3)
    assert model.embed_dim == 12 and model.space_dim == 4
    z = model({"a": torch.randn(10, 5)})["a"].unflatten(-1, (3, 4))
    if normalize == "l2":
        assert torch.allclose(z.norm(dim=-1), torch.ones(10, 3), atol=1e-6)
    else:
        assert torch.allclose(z.mean(dim=-1), torch.zeros(10, 3), atol=1e-5)


def test_a_recipe_with_a_list_of_losses_gets_one_space_per_scoring_term():
    recipe = polyalign.load_recipe(RECIPES / "xor-symile.yaml", [BOTH])
    plugins = default_plugins()
    loss, model = build_loss(recipe, plugins), build_model(recipe, plugins, EXAMPLES)
    assert loss.spaces == {"clip": 0, "symile": 1} and model.spaces == 2
    assert model.embed_dim == 2 * recipe.model.embed_dim
    shared = polyalign.load_recipe(RECIPES / "xor-symile.yaml", [BOTH, "model.spaces=shared"])
    assert build_loss(shared, plugins).spaces == {} and build_model(shared, plugins, EXAMPLES).embed_dim == 16
    # a regulariser is no expert: one scoring term, one space
    reg = polyalign.load_recipe(RECIPES / "xor-clip.yaml",
                                ["loss=[{plugin: clip}, {plugin: align_uniform, weight: 0.1}]"])
    assert build_loss(reg, plugins).spaces == {} and build_model(reg, plugins, EXAMPLES).spaces == 1
    assert build_model(polyalign.load_recipe(RECIPES / "xor-clip.yaml"), plugins, EXAMPLES).spaces == 1


def read_accuracy(run) -> float:
    rows = json.loads((run / "eval" / "report.json").read_text())
    return next(r["value"] for r in rows if r["task"] == "zero_shot" and r["metric"] == "accuracy")


def test_per_term_spaces_keep_the_joint_bits_where_a_shared_space_loses_them(tmp_path):
    # the mixed set (3 joint + 3 shared bits), seed 1: one shared space ends near 0.49 (only the
    # shared bits and part of the joint ones), a space per term learns them all
    overrides = ["data.n_train=4000", "data.n_val=200", "data.n_test=500", "train.batch_size=64", "data.d_v=3",
                 "data.d_shared=3", "seed=1", "train.threads=1", BOTH]
    run = polyalign.train(RECIPES / "xor-symile.yaml", out=tmp_path / "per_term", overrides=overrides)
    assert read_accuracy(run) >= 0.99
    shared = polyalign.train(RECIPES / "xor-symile.yaml", out=tmp_path / "shared",
                             overrides=overrides + ["model.spaces=shared"])
    assert read_accuracy(shared) < 0.9
    # a run written before model.spaces existed (its recipe.yaml without the key) loads as one shared space
    recipe_file = shared / "recipe.yaml"
    recipe_file.write_text(recipe_file.read_text().replace("  spaces: shared\n", ""))
    assert "spaces" not in recipe_file.read_text()
    assert polyalign.load(shared).embed_dim == 16
    # the trained model loads back and scores as the evaluation did: blocks and all
    model = polyalign.load(run)
    assert model.embed_dim == 32
    z = model.embed({"a": [[1.0, 0, 1, 0, 1, 1]], "c": [[0.0, 1, 1, 0, 1, 1]]})
    assert all(math.isclose(float(v.norm()), math.sqrt(2), rel_tol=1e-5) for v in z.values())
    q = model.inner_product_query(z, "b")
    cands = torch.randn(4, 32, dtype=q.dtype)
    cands = torch.cat([F.normalize(cands[:, :16], dim=1), F.normalize(cands[:, 16:], dim=1)], dim=1)
    assert torch.allclose(q @ cands.T, model.score_embeddings(z, cands, "b"), rtol=1e-4, atol=1e-4)


def test_a_per_term_model_exports_indexes_and_loads_back(tmp_path, tiny_xor):
    import numpy as np

    from polyalign.inference.export import export_model
    from polyalign.inference.search import search_sources

    run = polyalign.train(RECIPES / "xor-symile.yaml", out=tmp_path / "runs", overrides=tiny_xor + ["eval=[]", BOTH])
    export_model(run, tmp_path / "model")
    exported, trained = polyalign.load(tmp_path / "model"), polyalign.load(run)
    rows = list(np.random.default_rng(0).integers(0, 2, (7, 5)).astype(np.float32))
    z = exported.embed({"a": rows, "b": rows, "c": rows})
    assert z["a"].shape == (7, 32)
    assert torch.allclose(z["a"], trained.embed({"a": rows})["a"], atol=1e-6)
    assert torch.allclose(exported.score_embeddings({"a": z["a"], "c": z["c"]}, z["b"], "b"),
                          trained.score_embeddings({"a": z["a"], "c": z["c"]}, z["b"], "b"), atol=1e-5)
    faiss = pytest.importorskip("faiss")
    del faiss
    from polyalign.cli import main

    bits = tmp_path / "bits.npy"
    np.save(bits, np.array([[int(c) for c in f"{i:05b}"] for i in range(32)], dtype=np.float32))
    assert main(["index", str(run), "--modality", "b", "--input", str(bits), "--out", str(tmp_path / "b.faiss")]) == 0
    queries = ["a=[1,0,1,1,0]", "c=[0,1,1,0,1]"]
    brute = search_sources(trained, queries, f"b={bits}", top_k=32)
    indexed = search_sources(trained, queries, f"b={tmp_path / 'b.faiss'}", top_k=32)
    assert [h.id for h in indexed.hits] == [h.id for h in brute.hits]
    assert [h.score for h in indexed.hits] == pytest.approx([h.score for h in brute.hits], abs=1e-4)
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    export_model(run, tmp_path / "onnx", format="onnx")
    encoder = trained.model.encoders["a"]
    x = encoder.collate([encoder.load(v, tmp_path) for v in rows])
    session = ort.InferenceSession(str(tmp_path / "onnx" / "a.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["embeddings"], {"input": x.numpy()})[0], z["a"].numpy(), atol=1e-4)
