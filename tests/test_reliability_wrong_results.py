"""Silent wrong results (issue 22, class 1): each case gives the right result or a refusal naming what
is wrong: stale cached features, a modality no shard sample holds, `--resume` on an export, an empty
candidate source, and faiss indexes that do not rank by inner product."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image
from safetensors.torch import load_file

import polyalign
from polyalign.cli import main
from polyalign.core.assemble import assemble
from polyalign.inference.export import export_model
from polyalign.plugins.datasets.shards import write_shards
from polyalign.training.cache_fill import fill_caches
from polyalign.training.input_cache import value_key

XOR = ROOT / "polyalign" / "recipes" / "xor-clip.yaml"
TINY = ["data.n_train=64", "data.n_val=32", "data.n_test=32", "train.batch_size=32", "train.epochs=1", "eval=[]"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return polyalign.train(XOR, out=tmp_path_factory.mktemp("runs"), overrides=TINY)


def _errors(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected" not in err, err
    return err


# --------------------------------------------------------------------------- stale feature cache
def test_features_filled_with_other_options_are_not_reused(tmp_path):
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, rows in {"train": range(6), "val": range(6, 8), "test": range(8, 10)}.items():
        for i in rows:
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(data / "img" / f"{i}.png")
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"image": f"img/{i}.png", "v": [float(i), 1.0]}) + "\n"
                                                     for i in rows))
    image = "{plugin: image, model: test_resnet, image_size: 64, freeze: true, timm_kwargs: {global_pool: %s}}"

    def recipe(pool: str):
        return polyalign.load_recipe(XOR, [f"data={{plugin: manifest, path: '{data}'}}",
                                           f"modalities={{image: {{encoder: {image % pool}}}, "
                                           f"v: {{encoder: {{plugin: vector}}}}}}", "loss={plugin: clip}", "eval=[]",
                                           "train.batch_size=2", "cache.features=true", f"cache.dir={tmp_path}/c"])

    assert [f.computed for f in fill_caches(recipe("avg"), show_progress=False)] == [8]
    (filled,) = fill_caches(recipe("max"), show_progress=False)
    assert filled.computed == 8  # another option, other features: none reused
    stored = {k: v for f in filled.folder.glob("*.safetensors") for k, v in load_file(str(f)).items()}
    encoder = assemble(recipe("max")).model.encoders["image"].eval()  # the random weights the recipe seeds
    with torch.no_grad():
        expected = encoder(encoder.collate([encoder.load(Path(f"img/{i}.png"), data) for i in range(8)]))
    got = torch.stack([stored[value_key(Path(f"img/{i}.png"), data)] for i in range(8)])
    torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------- rows with nothing to learn from
def _webdataset(shards: str, resampled: bool) -> list[str]:
    return [f"data={{plugin: webdataset, train: '{shards}', modalities: {{a: a.json, b: b.json}}, "
            f"resampled: {str(resampled).lower()}}}",
            "modalities={a: {encoder: {plugin: vector, dim: 2}}, b: {encoder: {plugin: vector, dim: 2}}}",
            "loss={plugin: clip}", "eval=[]", "train.batch_size=4", "train.epochs=2", "train.num_workers=0",
            "logging=[]", *(["train.max_steps=3"] if resampled else [])]


@pytest.mark.parametrize("resampled", [False, True], ids=["epochs", "resampled-max-steps"])
def test_shards_whose_members_are_not_adjacent_stop_naming_the_modalities(tmp_path, capsys, resampled):
    import io
    import tarfile

    shard = tmp_path / "train-000000.tar"
    with tarfile.open(shard, "w") as tar:  # every key's .a member, then every key's .b member
        for ext in ("a", "b"):
            for i in range(8):
                data = json.dumps([float(i), 1.0]).encode()
                info = tarfile.TarInfo(f"{i:08d}.{ext}.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    assert main(["train", str(XOR), *_webdataset(str(shard), resampled), "--out", str(tmp_path / "runs")]) == 2
    err = _errors(capsys)
    read = 12 if resampled else 16  # 3 steps of 4 inside the nominal epoch of 16, or the whole epoch
    assert f"modality 'a', 'b' had no value beside another modality's in any of the {read} train samples" in err
    assert "adjacent" in err


def test_shards_where_a_modality_is_in_no_sample_are_refused_naming_it(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for split, n in {"train": 16, "val": 4, "test": 4}.items():
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"a": [float(i), 1.0], "b": [1.0, float(i)]}) + "\n"
                                                     for i in range(n)))
    write_shards(data, tmp_path / "shards", 8)
    overrides = [o.replace("b: b.json", "b: b.npy") for o in _webdataset(f"{tmp_path}/shards/train-00000{{0..1}}.tar",
                                                                          False)]
    assert main(["train", str(XOR), *overrides, "--out", str(tmp_path / "runs")]) == 2
    assert "no row provides 'b'" in _errors(capsys)


# --------------------------------------------------------------------------- wrong targets
def test_resume_of_an_export_is_refused_and_the_export_is_untouched(run, tmp_path, capsys):
    dest = export_model(run, tmp_path / "export")
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    assert main(["train", "--resume", str(dest)]) == 2
    assert "is an exported model" in _errors(capsys)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before


def test_an_empty_candidate_source_is_refused_not_the_current_folder(run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "bits.npy", np.eye(5, dtype=np.float32))
    for source in ("", " "):
        assert main(["search", str(run), "--query", "a=[1,0,1,1,0]", "--query", "c=[0,1,1,0,1]",
                     "--candidates", f"b={source}"]) == 2
        assert "the source of 'b' is empty" in _errors(capsys)
    assert main(["embed", str(run), "--modality", "b", "--input", "", "--out", str(tmp_path / "e.safetensors")]) == 2
    assert "is empty" in _errors(capsys)


@pytest.mark.parametrize("kind", ["l2", "pq"])
def test_an_index_that_does_not_rank_by_inner_product_is_refused(run, tmp_path, capsys, kind):
    faiss = pytest.importorskip("faiss")
    bits = tmp_path / "bits.npy"
    np.save(bits, np.array([[(i >> j) & 1 for j in range(5)] for i in range(32)], dtype=np.float32))
    path = tmp_path / "b.faiss"
    assert main(["index", str(run), "--modality", "b", "--input", str(bits), "--out", str(path)]) == 0
    good = faiss.read_index(str(path))
    vectors = good.reconstruct_n(0, good.ntotal)
    if kind == "l2":
        other = faiss.IndexFlatL2(good.d)
    else:
        other = faiss.IndexPQ(good.d, 1, 4, faiss.METRIC_INNER_PRODUCT)
        other.train(vectors)
    other.add(vectors)
    data = faiss.serialize_index(other).tobytes()
    path.write_bytes(data)
    meta = json.loads(Path(f"{path}.json").read_text())
    Path(f"{path}.json").write_text(json.dumps({**meta, "index_sha256": hashlib.sha256(data).hexdigest()}))
    capsys.readouterr()
    assert main(["search", str(run), "--query", "a=[1,0,1,1,0]", "--query", "c=[0,1,1,0,1]",
                 "--candidates", f"b={path}"]) == 2
    err = _errors(capsys)
    assert ("is a faiss IndexFlatL2" if kind == "l2" else "is a faiss IndexPQ") in err
