"""Encoder ``tabular``: rows with missing entries -> standardised value + missingness bit -> MLP."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

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
    enc = polyalign.build("encoder", "tabular", example="a.npy", root=tmp_path, hidden=[16, 8])
    assert enc.n == 3 and enc.width == 8
    a, b = enc.load("a.npy", tmp_path), enc.load("b.json", tmp_path)
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
    check_encoder("vector", ["v.npy", [1.0, 2.0, 3.0], np.zeros(3)], root=tmp_path, hidden=[8, 4], dropout=0.1)
