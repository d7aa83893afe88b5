"""polyalign export --format onnx: onnxruntime reproduces polyalign's embeddings of real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import RECIPES
from test_demo import TINY_DEMO

import polyalign
from polyalign.cli import main
from polyalign.core.hookspecs import hookimpl
from polyalign.core.plugin_manager import make_plugins
from polyalign.inference.export import export_model
from polyalign.inference.sources import read_source
from polyalign.plugins.encoders.vector import VectorConfig, VectorEncoder

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def onnx_embeddings(folder: Path, model, modality: str, values: list, root: Path) -> np.ndarray:
    """What a user of the .onnx file computes: polyalign's loader outside the graph, onnxruntime inside."""
    encoder = model.model.encoders[modality]
    x = encoder.collate([encoder.load(v, root) for v in values])
    feeds = {k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else {"input": x.numpy()}
    session = ort.InferenceSession(str(folder / f"{modality}.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["embeddings"], feeds)[0]


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    run = polyalign.train(RECIPES / "demo-multimodal.yaml", out=tmp / "runs",
                          overrides=TINY_DEMO + [f"data.path={tmp / 'data'}", "train.epochs=1", "eval=[]"])
    assert main(["export", str(run), str(tmp / "model"), "--format", "onnx"]) == 0
    return tmp / "model", tmp / "data"


@pytest.mark.parametrize("modality", ["image", "text", "audio", "ecg"])
def test_onnx_graphs_reproduce_the_embeddings_of_real_files(demo_export, modality):
    folder, data = demo_export
    model = polyalign.load(folder)
    found = read_source(data / "test.jsonl", modality)  # PNG, .txt, WAV and .npy files
    assert len(found.values) == 16
    for rows in (found.values[:1], found.values):  # a batch of one and of sixteen: the batch axis is free
        expected = model.embed({modality: rows}, root=found.root)[modality].numpy()
        got = onnx_embeddings(folder, model, modality, rows, found.root)
        assert got.shape == expected.shape == (len(rows), 64)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert np.linalg.norm(got, axis=1) == pytest.approx(1.0, abs=1e-5)  # the l2 normalisation is inside


def test_model_card_lists_the_graphs_and_their_inputs(demo_export):
    folder, _ = demo_export
    card = (folder / "MODEL_CARD.md").read_text()
    assert "## ONNX" in card
    assert "| text | `text.onnx` | `input_ids` int64 (batch, length), `attention_mask` int64 (batch, length) |" in card
    assert "| image | `image.onnx` | `input` float (batch, 3, 16, 16) |" in card
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(folder / "ecg.onnx")).metadata_props}
    assert meta["polyalign.modality"] == "ecg" and meta["polyalign.embed_dim"] == "64"


def test_vector_graph_matches(tmp_path, tiny_xor):
    run = polyalign.train(RECIPES / "xor-clip.yaml", out=tmp_path / "runs", overrides=tiny_xor + ["eval=[]"])
    export_model(run, tmp_path / "model", format="onnx")
    model = polyalign.load(tmp_path / "model")
    rows = list(np.random.default_rng(0).integers(0, 2, (7, 5)).astype(np.float32))
    for m in "abc":
        expected = model.embed({m: rows})[m].numpy()
        np.testing.assert_allclose(onnx_embeddings(tmp_path / "model", model, m, rows, tmp_path), expected, atol=1e-4)


class Opaque(VectorEncoder):
    """A vector encoder that gives no example input, so it cannot be traced."""

    def export_example(self, batch):
        return None


class OpaquePlugin:
    @hookimpl
    def register_encoders(self, register):
        register("opaque", lambda config, example=None: Opaque(5, []), config=VectorConfig)


def test_an_encoder_without_an_example_is_refused_and_nothing_is_written(tmp_path, tiny_xor):
    plugins = make_plugins(extra=[OpaquePlugin()])
    run = polyalign.train(RECIPES / "xor-clip.yaml", out=tmp_path / "runs", plugins=plugins,
                          overrides=tiny_xor + ["eval=[]", "modalities.c.encoder={plugin: opaque}"])
    with pytest.raises(polyalign.core.errors.PolyalignError, match="'opaque' cannot be exported to ONNX"):
        export_model(run, tmp_path / "model", plugins=plugins, format="onnx")
    assert not (tmp_path / "model").exists() and not list(tmp_path.glob(".model*"))
    export_model(run, tmp_path / "model", plugins=plugins)  # the safetensors export still works
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "MODEL_CARD.md", "model.safetensors", "recipe.yaml"]
