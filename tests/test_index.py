"""polyalign index and search --candidates M=FILE.faiss: exact equals brute force, approximate
indexes reach their measured recall, losses without an inner-product score are refused."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import polyalign
from polyalign.cli import main
from polyalign.inference.search import search_sources
from polyalign.inference.vector_index import IndexOptions, build_index, recall_at_k

faiss = pytest.importorskip("faiss")

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY = ["data.n_train=512", "data.n_val=0", "data.n_test=128", "train.batch_size=64", "train.epochs=2",
        "train.warmup_steps=0", "eval=[]"]
ALL_BITS = np.array(list(itertools.product([0, 1], repeat=5)), dtype=np.float32)
QUERY = ["--query", "a=[1,0,1,1,0]", "--query", "c=[0,1,1,0,1]"]


def train(tmp_path_factory, recipe: str, *extra: str) -> Path:
    return polyalign.train(RECIPES / recipe, out=tmp_path_factory.mktemp(recipe), overrides=TINY + list(extra))


@pytest.fixture(scope="module")
def symile_run(tmp_path_factory):
    return train(tmp_path_factory, "xor-symile.yaml")


@pytest.fixture(scope="module")
def bits(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bits") / "bits.npy"
    np.save(path, ALL_BITS)
    return path


def index(run: Path, out: Path, source: Path, *options: str, modality: str = "b") -> int:
    return main(["index", str(run), "--modality", modality, "--input", str(source), "--out", str(out), *options])


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_search_equals_brute_force_search(symile_run, bits, tmp_path, kind):
    assert index(symile_run, tmp_path / "b.faiss", bits, "--kind", kind) == 0
    model = polyalign.load(symile_run)
    queries = [q for q in QUERY if q != "--query"]
    brute = search_sources(model, queries, f"b={bits}", top_k=32)
    indexed = search_sources(model, queries, f"b={tmp_path / 'b.faiss'}", top_k=32)
    assert [h.id for h in indexed.hits] == [h.id for h in brute.hits]
    assert [h.score for h in indexed.hits] == pytest.approx([h.score for h in brute.hits], abs=1e-6)
    assert indexed.n_candidates == 32
    meta = json.loads((tmp_path / "b.faiss.json").read_text())
    assert meta["modality"] == "b" and meta["kind"] == kind and meta["ids"] == list(range(32))
    assert meta["weights_sha256"] == model.weights_sha256


def clustered(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d))
    x = centers[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_approximate_indexes_reach_their_recall_and_searching_more_finds_more():
    vectors = clustered(3000, 32, 30, seed=0)
    queries = clustered(200, 32, 30, seed=1)
    assert recall_at_k(build_index(vectors, IndexOptions("flat")), vectors, queries) == 1.0
    ivf = build_index(vectors, IndexOptions("ivf", nlist=32, nprobe=1))
    hnsw = build_index(vectors, IndexOptions("hnsw", hnsw_m=16, ef_search=16))
    recalls = {"ivf nprobe=1": recall_at_k(ivf, vectors, queries), "hnsw ef=16": recall_at_k(hnsw, vectors, queries)}
    ivf.nprobe, hnsw.hnsw.efSearch = 8, 256
    recalls |= {"ivf nprobe=8": recall_at_k(ivf, vectors, queries), "hnsw ef=256": recall_at_k(hnsw, vectors, queries)}
    assert recalls["ivf nprobe=8"] >= 0.95 and recalls["hnsw ef=256"] >= 0.95, recalls
    assert recalls["ivf nprobe=1"] < recalls["ivf nprobe=8"] and recalls["hnsw ef=16"] < recalls["hnsw ef=256"], recalls


def test_index_reports_the_recall_it_measured(symile_run, tmp_path, capsys):
    rows = np.random.default_rng(0).standard_normal((400, 5)).astype(np.float32)  # distinct: no tied scores
    np.save(tmp_path / "rows.npy", rows)
    assert index(symile_run, tmp_path / "b.faiss", tmp_path / "rows.npy", "--kind", "ivf", "--nlist", "4") == 0
    printed = capsys.readouterr().out
    meta = json.loads((tmp_path / "b.faiss.json").read_text())
    assert meta["nlist"] == 4 and meta["nprobe"] == 4 and meta["recall_queries"] == 400
    assert meta["recall_at_10"] == 1.0 and "recall@10 = 1.000" in printed  # every cluster probed: exact


def test_gram_is_refused_at_index_time(tmp_path_factory, bits, tmp_path, capsys):
    run = train(tmp_path_factory, "xor-gram.yaml")
    assert index(run, tmp_path / "b.faiss", bits) == 2
    err = capsys.readouterr().err
    assert "GramLoss" in err and "no inner product" in err
    assert not (tmp_path / "b.faiss").exists()


def test_siglip_is_served_for_one_query_modality_and_refused_for_two(tmp_path_factory, bits, tmp_path, capsys):
    run = train(tmp_path_factory, "xor-clip.yaml", "loss={plugin: siglip}")
    assert index(run, tmp_path / "b.faiss", bits) == 0
    model = polyalign.load(run)
    one = search_sources(model, ["a=[1,0,1,1,0]"], f"b={tmp_path / 'b.faiss'}", top_k=32)
    brute = search_sources(model, ["a=[1,0,1,1,0]"], f"b={bits}", top_k=32)
    assert [h.id for h in one.hits] == [h.id for h in brute.hits]
    capsys.readouterr()
    assert main(["search", str(run), *QUERY, "--candidates", f"b={tmp_path / 'b.faiss'}"]) == 2
    assert "SiglipLoss" in capsys.readouterr().err


def test_bad_index_files_are_refused_with_a_message(symile_run, bits, tmp_path, capsys, tmp_path_factory):
    good = tmp_path / "b.faiss"
    assert index(symile_run, good, bits) == 0

    def search_error(candidates: str, run: Path = symile_run, query: list[str] = QUERY) -> str:
        capsys.readouterr()
        assert main(["search", str(run), *query, "--candidates", candidates]) == 2
        return capsys.readouterr().err

    assert "indexes 'b' embeddings, not 'c'" in search_error(f"c={good}", query=["--query", "a=[1,0,1,1,0]"])
    assert "does not exist" in search_error(f"b={tmp_path / 'missing.faiss'}")
    cut = tmp_path / "cut.faiss"
    cut.write_bytes(good.read_bytes()[:100])
    (tmp_path / "cut.faiss.json").write_text((tmp_path / "b.faiss.json").read_text())
    assert "SHA-256 differs" in search_error(f"b={cut}")
    lone = tmp_path / "lone.faiss"
    lone.write_bytes(good.read_bytes())
    assert "no lone.faiss.json beside it" in search_error(f"b={lone}")
    (tmp_path / "lone.faiss.json").write_text("{not json")
    assert "lone.faiss.json: not valid JSON" in search_error(f"b={lone}")
    other = train(tmp_path_factory, "xor-symile.yaml", "seed=1")
    assert "embedded by another model" in search_error(f"b={good}", run=other)
    assert "polyalign index" in search_error(f"b={good}", run=other)
    capsys.readouterr()
    assert index(symile_run, tmp_path / "b.index", bits) == 2
    assert "must end in .faiss" in capsys.readouterr().err
    assert index(symile_run, tmp_path / "x.faiss", bits, "--kind", "hnsw", "--ef-search", "0") == 2
    assert "--ef-search must be a whole number from 1 to 65536" in capsys.readouterr().err
    assert index(symile_run, tmp_path / "x.faiss", bits, "--kind", "ivf") == 2
    assert "too few" in capsys.readouterr().err
