"""Encoder ``tabular``: rows with missing entries -> standardised value + missingness bit -> MLP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

import polyalign
from polyalign.core.batch import Collator
from polyalign.core.errors import PolyalignError
from polyalign.testing import check_encoder


def test_values_and_missingness_indicators():
    enc = polyalign.build("encoder", "tabular", dim=4, mean=[1.0, 2.0, 3.0, 4.0], std=[2.0, 1.0, 0.5, 4.0],
                          fill=0.0, hidden=[8])
    got = enc.load([3.0, None, float("nan"), 0.0], None)
    expected = [(3 - 1) / 2, 0.0, 0.0, (0 - 4) / 4, 1.0, 0.0, 0.0, 1.0]
    np.testing.assert_allclose(got.numpy(), expected)
    assert enc.load([None] * 4, None)[4:].sum() == 0


def test_columns_inferred_from_a_mapping_example():
    example = {"hb": 13.5, "wbc": None, "na": 140}
    enc = polyalign.build("encoder", "tabular", example=example, hidden=[])
    assert enc.columns == ["hb", "wbc", "na"] and enc.width == 6
    assert enc.rebuild_options() == {"columns": ["hb", "wbc", "na"]}
    np.testing.assert_allclose(enc.load({"na": 135, "hb": 12.0}, None).numpy(), [12.0, 0.0, 135.0, 1, 0, 1])
    with pytest.raises(PolyalignError, match="unknown column"):
        enc.load({"k": 4.0}, None)
    with pytest.raises(PolyalignError, match="expected a row of 3 entries, got 2"):
        enc.load([1.0, 2.0], None)


def test_rows_from_files_and_batch_with_missing_row(tmp_path):
    np.save(tmp_path / "a.npy", np.array([1.0, np.nan, 3.0]))
    (tmp_path / "b.json").write_text(json.dumps([None, 5.0, 6.0]))
    enc = polyalign.build("encoder", "tabular", example=Path("a.npy"), root=tmp_path, hidden=[16, 8])
    assert enc.n == 3 and enc.width == 8
    a, b = enc.load(Path("a.npy"), tmp_path), enc.load(Path("b.json"), tmp_path)
    np.testing.assert_allclose(a.numpy(), [1, 0, 3, 1, 0, 1])
    np.testing.assert_allclose(b.numpy(), [0, 5, 6, 0, 1, 1])
    batch = Collator({"lab": enc.collate})([(0, {"lab": a}, None), (1, {}, None), (2, {"lab": b}, None)])
    assert batch.inputs["lab"].shape == (3, 6) and batch.present["lab"].tolist() == [True, False, True]
    feats = enc(batch.inputs["lab"])
    assert feats.shape == (3, 8)
    feats[batch.present["lab"]].sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_bad_rows():
    enc = polyalign.build("encoder", "tabular", dim=2)
    with pytest.raises(PolyalignError, match="not a number"):
        enc.load([1.0, "high"], None)
    with pytest.raises(PolyalignError, match=r"\.npy/\.json file"):
        enc.load("1.0, 2.0", None)
    with pytest.raises(PolyalignError, match="std values must be positive"):
        polyalign.build("encoder", "tabular", dim=2, std=[1.0, 0.0])
    assert math.isclose(float(enc.load([float("nan"), 2.0], None)[0]), 0.0)
    assert torch.is_tensor(enc.load(np.array([1.0, 2.0]), None))


def test_tabular_and_vector_encoders_keep_the_encoder_contract(tmp_path):
    rows = [{"hb": 13.5, "wbc": None, "na": 140}, {"na": 135.0, "hb": 12.0}, {"wbc": 7.1}]
    check_encoder("tabular", rows, hidden=[8], mean=[13.0, 7.0, 138.0], std=[1.5, 2.0, 3.0])  # columns inferred
    np.save(tmp_path / "v.npy", np.array([0.5, -1.0, 2.0]))
    check_encoder("vector", [Path("v.npy"), [1.0, 2.0, 3.0], np.zeros(3)], root=tmp_path, hidden=[8, 4], dropout=0.1)


def test_auto_statistics_are_the_train_columns_mean_and_std():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 4)) * [1.0, 10.0, 0.001, 1.0] + [0.0, -3.0, 1e6, 7.0]
    table[rng.random((50, 4)) < 0.3] = np.nan
    table[:, 3] = 7.0  # a constant column: std 1, not 0
    enc = polyalign.build("encoder", "tabular", dim=4, mean="auto", std="auto", hidden=[])
    with pytest.raises(PolyalignError, match="mean and std: auto needs the train split's statistics"):
        enc.load(table[0].tolist(), None)
    enc.fit(iter([[None if math.isnan(x) else x for x in row] for row in table]), None)
    options = enc.rebuild_options()
    np.testing.assert_allclose(options["mean"], np.nanmean(table, axis=0), rtol=1e-12)
    # rtol 1e-6 on a column of std 1e-3 around 1e6 (a sum of squares would lose every digit there)
    np.testing.assert_allclose(options["std"][:3], np.nanstd(table[:, :3], axis=0), rtol=1e-6)
    assert options["std"][3] == 1.0 and options["dim"] == 4
    np.testing.assert_allclose(enc.load(table[1].tolist(), None)[:4].numpy(),
                               np.nan_to_num((table[1] - options["mean"]) / options["std"]), rtol=1e-5, atol=1e-5)


def test_auto_statistics_are_recorded_in_the_run_and_the_export(tmp_path):
    from polyalign.inference.export import export_model

    rng = np.random.default_rng(1)
    folder = tmp_path / "data"
    folder.mkdir()
    labs = {}
    for split, n in (("train", 32), ("val", 8), ("test", 8)):
        labs[split] = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.5] + [10.0, -2.0, 0.0]
        rows = [{"lab": [float(x) for x in labs[split][i]], "v": rng.normal(size=2).tolist()} for i in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = polyalign.load_recipe(ROOT / "polyalign" / "recipes" / "xor-clip.yaml", [
        f"data={{plugin: manifest, path: '{folder}'}}",
        ("modalities={lab: {encoder: {plugin: tabular, mean: auto, std: auto, hidden: [8]}}, "
         "v: {encoder: {plugin: vector, hidden: []}}}"),
        "eval=[]", "train.epochs=1", "train.batch_size=16", "train.warmup_steps=0", "model.embed_dim=8"])
    run = polyalign.train(recipe, out=tmp_path / "runs")
    node = polyalign.load_recipe(run / "recipe.yaml").modalities["lab"].encoder.options()
    np.testing.assert_allclose(node["mean"], labs["train"].mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(node["std"], labs["train"].std(axis=0), rtol=1e-9)
    exported = export_model(run, tmp_path / "export")
    assert polyalign.load_recipe(exported / "recipe.yaml").modalities["lab"].encoder.options()["mean"] == node["mean"]
    model = polyalign.load(exported)  # rebuilt from the recorded numbers, without the data
    assert model.embed({"lab": [labs["test"][0].tolist()]})["lab"].shape == (1, 8)
