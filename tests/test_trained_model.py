"""Using a trained run: load, embed, score, search, export, and the embed/search CLI."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import polyalign
from polyalign.cli import main
from polyalign.core.assemble import assemble
from polyalign.core.errors import PluginError, PolyalignError
from polyalign.core.evaluator import embed_split, ranks_of_correct, retrieval_metrics
from polyalign.inference.embeddings_file import read_embeddings
from polyalign.inference.export import export_model
from polyalign.inference.sources import query_value, read_source

RECIPES = Path(__file__).resolve().parents[1] / "polyalign" / "recipes"
# CLIP on XOR with p_hat = 0: c = a always, so searching c from a has one right answer
OVERRIDES = ["data.n_train=1024", "data.n_val=128", "data.n_test=128", "data.p_hat=0.0",
             "train.batch_size=64", "train.epochs=3", "train.warmup_steps=0", "train.log_every=4"]
ALL_BITS = np.array(list(itertools.product([0, 1], repeat=5)), dtype=np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return polyalign.train(RECIPES / "xor-clip.yaml", out=tmp_path_factory.mktemp("runs"), overrides=OVERRIDES)


@pytest.fixture(scope="module")
def model(run):
    return polyalign.load(run)


def test_run_recipe_records_inferred_encoder_options(run):
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert {m: node["encoder"]["dim"] for m, node in recipe["modalities"].items()} == {"a": 5, "b": 5, "c": 5}


def test_embed_equals_the_evaluators_embeddings(run, model):
    parts = assemble(model.recipe)
    parts.load_state_dict(model.parts.state_dict())
    expected, present = embed_split(parts, "test", torch.device("cpu"), model.recipe.train.batch_size)
    test = parts.dataset.split("test")
    got = model.embed({m: [s[m] for s in test] for m in "abc"})
    assert model.parts.dataset is None  # rebuilt from recipe.yaml alone
    for m in "abc":
        assert got[m].shape == (128, 16)
        assert not got[m].requires_grad
        assert torch.equal(got[m].cpu(), expected[m]), m


def test_score_reproduces_the_reported_zero_shot_accuracy(run, model):
    """score() is the rule the evaluator used: the report's numbers come back from raw values."""
    parts = assemble(model.recipe)
    test = parts.dataset.split("test")
    unique = {tuple(s["b"]): s["b"] for s in test}
    cands = list(unique.values())
    scores = model.score({"a": [s["a"] for s in test], "c": [s["c"] for s in test]}, {"b": cands})
    correct = torch.tensor([[tuple(s["b"]) == tuple(c) for c in cands] for s in test])
    metrics = retrieval_metrics(ranks_of_correct(scores.cpu(), correct))
    report = {r["metric"]: r["value"] for r in json.loads((run / "eval" / "report.json").read_text())}
    assert metrics["accuracy"] == pytest.approx(report["accuracy"], abs=1e-12)
    assert metrics["mrr"] == pytest.approx(report["mrr"], abs=1e-12)


def test_score_is_the_sum_of_cosines_in_float64(model):
    emb = model.embed({"a": ALL_BITS[:7], "b": ALL_BITS[3:10], "c": ALL_BITS})
    expected = emb["a"].double() @ emb["c"].double().T + emb["b"].double() @ emb["c"].double().T
    got = model.score({"a": ALL_BITS[:7], "b": ALL_BITS[3:10]}, {"c": ALL_BITS})
    assert got.shape == (7, 32)
    assert torch.allclose(got.double(), expected, atol=1e-6)


def test_score_ranks_candidate_tuples_with_the_losses_rule(model):
    emb = model.embed({"a": ALL_BITS[:5], "b": ALL_BITS, "c": ALL_BITS[::-1]})
    expected = emb["a"].double() @ emb["b"].double().T + emb["a"].double() @ emb["c"].double().T
    got = model.score({"a": ALL_BITS[:5]}, {"b": ALL_BITS, "c": ALL_BITS[::-1]})
    assert got.shape == (5, 32)
    assert torch.allclose(got.double(), expected, atol=1e-6)


def test_search_ranks_the_right_item_first_on_xor(model):
    hits = model.search({"a": ALL_BITS}, {"c": ALL_BITS}, top_k=3, ids=[f"c{i}" for i in range(32)])
    assert [h[0].index for h in hits] == list(range(32))
    assert hits[5][0].id == "c5" and hits[5][0].rank == 1
    scores = model.score({"a": ALL_BITS}, {"c": ALL_BITS})
    for i, row in enumerate(hits):
        assert [h.score for h in row] == pytest.approx(sorted(scores[i].tolist(), reverse=True)[:3])


def test_bad_calls_say_what_to_do(run, model):
    with pytest.raises(PolyalignError, match="not a modality of this model; it has: a, b, c"):
        model.embed({"x": [ALL_BITS[0]]})
    with pytest.raises(PolyalignError, match="wrap it in a list"):
        model.embed({"a": "vector.npy"})
    with pytest.raises(PolyalignError, match="one row per candidate"):
        model.score({"a": ALL_BITS}, {"b": ALL_BITS, "c": ALL_BITS[:3]})
    with pytest.raises(PolyalignError, match="'b' is both a query modality and a candidates' modality"):
        model.score({"a": ALL_BITS, "b": ALL_BITS}, {"b": ALL_BITS})
    with pytest.raises(PolyalignError, match=r"modality 'a', value 1 .*expected a vector of 5 numbers, got 3"):
        model.embed({"a": [ALL_BITS[0], [1.0, 0.0, 1.0]]})
    with pytest.raises(PolyalignError, match="no checkpoint 'step9'; it has: best, last"):
        polyalign.load(run, checkpoint="step9")
    with pytest.raises(PolyalignError, match="neither a run directory"):
        polyalign.load(run / "eval")


@pytest.mark.slow
def test_export_then_load_in_a_fresh_process_gives_the_same_scores(run, model, tmp_path):
    dest = tmp_path / "exported"
    assert main(["export", str(run), str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["MODEL_CARD.md", "model.safetensors", "recipe.yaml"]
    card = (dest / "MODEL_CARD.md").read_text()
    assert "### zero_shot" in card and "| b | a+c |" in card  # the evaluation: a section per evaluator
    assert "| encoder | vector | polyalign:encoders | polyalign | " + polyalign.__version__ + " |" in card
    np.save(tmp_path / "bits.npy", ALL_BITS)
    script = textwrap.dedent(f"""
        import numpy as np, torch, polyalign
        model = polyalign.load({str(dest)!r})
        assert model.parts.dataset is None
        bits = np.load({str(tmp_path / 'bits.npy')!r})
        torch.save(model.score({{"a": bits[:9]}}, {{"c": bits}}), {str(tmp_path / 'scores.pt')!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=120)
    fresh = torch.load(tmp_path / "scores.pt", weights_only=True)
    here = model.score({"a": ALL_BITS[:9]}, {"c": ALL_BITS})
    # The promise is the same scores up to float rounding, not the same bits: the fresh process
    # runs on the machine's default thread count, this one on one thread, and sums may round apart.
    torch.testing.assert_close(fresh, here, rtol=1e-5, atol=1e-6)
    assert torch.equal(fresh.argsort(dim=1, descending=True, stable=True)[:, :3],
                       here.argsort(dim=1, descending=True, stable=True)[:, :3])
    with pytest.raises(PolyalignError, match="not an empty folder"):
        export_model(run, dest)


def test_load_refuses_a_card_whose_plugins_are_missing(run, tmp_path):
    dest = export_model(run, tmp_path / "exported")
    card = (dest / "MODEL_CARD.md").read_text()
    extra = ("- kind: loss\n  name: hyperbolic\n  plugin: polyalign-hyper:losses\n"
             "  distribution: polyalign-hyper\n  version: 0.3.1\n")
    (dest / "MODEL_CARD.md").write_text(card.replace("requires:\n", "requires:\n" + extra, 1))
    with pytest.raises(PluginError, match=r"loss 'hyperbolic' \(from polyalign-hyper 0.3.1\).*"
                                          r"pip install polyalign-hyper==0.3.1"):
        polyalign.load(dest)


def test_sources_folder_manifest_and_array(tmp_path, monkeypatch):
    folder = tmp_path / "vectors"
    (folder / "sub").mkdir(parents=True)
    np.save(folder / "x1.npy", ALL_BITS[1])
    np.save(folder / "sub" / "x0.npy", ALL_BITS[0])
    (folder / ".hidden").write_text("skip me")
    found = read_source(folder, "c")
    assert found.ids == ["sub/x0.npy", "x1.npy"] and found.root == folder
    assert found.values == [Path("sub/x0.npy"), Path("x1.npy")]  # files, as Paths
    (tmp_path / "m.csv").write_text('id,a,c\nfirst,"[1, 0, 0, 0, 1]",vectors/x1.npy\nsecond,"[0, 0, 0, 0, 1]",\n')
    found = read_source(tmp_path / "m.csv", "a")
    assert found.ids == ["first", "second"] and found.values[1] == [0, 0, 0, 0, 1]
    assert read_source(tmp_path / "m.csv", "c").values == [Path("vectors/x1.npy")]  # empty cell = missing
    (tmp_path / "lines.txt").write_text("vectors/x1.npy\nvectors/gone.npy\n")  # a line, read as a cell is
    assert read_source(tmp_path / "lines.txt", "c").values == [Path("vectors/x1.npy"), Path("vectors/gone.npy")]
    (tmp_path / "m.jsonl").write_text('{"c": [1, 1, 1, 1, 1]}\n\n{"a": [0, 0, 0, 0, 0]}\n')
    found = read_source(tmp_path / "m.jsonl", "c")
    assert found.ids == [0] and found.root == tmp_path
    with pytest.raises(PolyalignError, match="has no column 'b'; its columns are: a, c"):
        read_source(tmp_path / "m.jsonl", "b")
    monkeypatch.chdir(tmp_path)  # a command-line value: a file (relative to the current folder), numbers or text
    assert [query_value(v) for v in ("vectors/x1.npy", "[1, 0]", "vectors/x2.npy", "a dog")] == \
        [Path("vectors/x1.npy"), [1, 0], Path("vectors/x2.npy"), "a dog"]  # x2: missing, said so by the encoder


def test_cli_embed_then_search(run, model, tmp_path, capsys):
    np.save(tmp_path / "bits.npy", ALL_BITS)
    out = tmp_path / "c.safetensors"
    assert main(["embed", str(run), "--modality", "c", "--input", str(tmp_path / "bits.npy"), "--out", str(out)]) == 0
    saved = read_embeddings(out)
    assert saved.ids == list(range(32)) and saved.modality == "c"
    assert torch.equal(saved.embeddings, model.embed({"c": ALL_BITS})["c"].cpu())
    for candidates in (str(tmp_path / "bits.npy"), str(out)):
        capsys.readouterr()
        assert main(["search", str(run), "--query", "a=[0, 1, 1, 0, 1]", "--candidates", f"c={candidates}",
                     "--top", "2"]) == 0
        lines = [line for line in capsys.readouterr().out.splitlines() if "│" in line]
        assert lines[0].split("│")[1:3] == ["    1 ", " 13 "]  # 01101 is row 13 of the 32
    assert main(["search", str(run), "--query", "b=[0, 1, 1, 0, 1]", "--candidates", f"b={out}"]) == 2
    assert "holds 'c' embeddings, not 'b'" in capsys.readouterr().err


def test_cli_embed_arrays_as_rows_or_as_one_value(run, model, tmp_path, capsys):
    """A .npy source holds one value per row of its first axis; --value (or a folder) takes a file as one value."""
    folder = tmp_path / "one-per-file"
    folder.mkdir()
    for i in (3, 13):
        np.save(folder / f"v{i:02d}.npy", ALL_BITS[i])
    np.save(tmp_path / "stack.npy", ALL_BITS[:, None, :])  # 32 values, each a (1, 5) array
    out = tmp_path / "e.safetensors"
    expected = model.embed({"c": ALL_BITS})["c"].cpu()
    assert main(["embed", str(run), "--modality", "c", "--input", str(tmp_path / "stack.npy"), "--out", str(out)]) == 0
    assert torch.allclose(read_embeddings(out).embeddings, expected)
    assert main(["embed", str(run), "--modality", "c", "--input", str(folder), "--out", str(out)]) == 0
    saved = read_embeddings(out)
    assert saved.ids == ["v03.npy", "v13.npy"] and torch.allclose(saved.embeddings, expected[[3, 13]])
    one = str(folder / "v13.npy")
    assert main(["embed", str(run), "--modality", "c", "--value", one, "--out", str(out)]) == 0
    saved = read_embeddings(out)
    assert saved.ids == [one] and torch.allclose(saved.embeddings, expected[[13]])
    assert "embedded 1 c value(s) from" in capsys.readouterr().out
    assert main(["embed", str(run), "--modality", "c", "--value", "[0, 1, 1, 0, 1]", "--out", str(out)]) == 0
    assert torch.allclose(read_embeddings(out).embeddings, expected[[13]])
    assert main(["embed", str(run), "--modality", "c", "--input", one, "--out", str(out)]) == 2
    assert f"{one} holds an array of shape (5,), which is one value, not rows of values (a .npy source holds one " \
           f"value per row of its first axis); embed a file holding one value with `polyalign embed --value {one}`" \
        in capsys.readouterr().err
    np.save(tmp_path / "wide.npy", np.zeros((4, 10), np.float32))
    assert main(["embed", str(run), "--modality", "c", "--input", str(tmp_path / "wide.npy"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "expected a vector of 5 numbers, got 10" in err
    assert f"was read as 4 value(s), one per row of its first axis; if the file holds one value, embed it with " \
           f"`polyalign embed --value {tmp_path / 'wide.npy'}`)" in err
