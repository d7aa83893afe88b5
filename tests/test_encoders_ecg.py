"""Encoder ``ecg``: .npy and WFDB recordings, per-lead standardisation, 1-D ResNet-18."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import wfdb

import polyalign
from polyalign.core.batch import Collator
from polyalign.core.errors import PolyalignError
from polyalign.plugins.encoders.ecg import BasicBlock1d
from polyalign.testing import check_encoder


def _recording(leads: int = 12, samples: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 100
    return (np.sin(2 * np.pi * 1.2 * t)[None] * rng.uniform(0.5, 2, (leads, 1)) + rng.uniform(-1, 1, (leads, 1))
            + 0.1 * rng.normal(size=(leads, samples))).astype(np.float32)


def _standardised(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)


def _tiny(**options):
    return polyalign.build("encoder", "ecg", base_width=4, **options)


def test_npy_either_layout_standardised_per_lead(tmp_path):
    x = _recording()
    np.save(tmp_path / "leads_first.npy", x)
    np.save(tmp_path / "time_first.npy", x.T)
    enc = _tiny(length=600)
    a, b = enc.load("leads_first.npy", tmp_path), enc.load("time_first.npy", tmp_path)
    assert a.shape == (12, 600) and torch.equal(a, b)
    np.testing.assert_allclose(a.double().numpy(), _standardised(x), atol=1e-4)


def test_length_from_example_crop_and_pad(tmp_path):
    x = _recording(samples=800)
    np.save(tmp_path / "long.npy", x)
    np.save(tmp_path / "short.npy", x[:, :300])
    enc = polyalign.build("encoder", "ecg", base_width=4, example="long.npy", root=tmp_path)
    assert enc.length == 800 and enc.rebuild_options() == {"length": 800}
    enc = _tiny(length=500)
    np.testing.assert_allclose(enc.load("long.npy", tmp_path).double().numpy(), _standardised(x[:, 150:650]),
                               atol=1e-4)  # center crop
    short = enc.load("short.npy", tmp_path)
    assert torch.all(short[:, 300:] == 0)
    np.testing.assert_allclose(short[:, :300].double().numpy(), _standardised(x[:, :300]), atol=1e-4)


def test_wfdb_record_with_lead_selection(tmp_path):
    x = _recording(leads=3, samples=400)
    wfdb.wrsamp("rec", fs=100, units=["mV"] * 3, sig_name=["I", "II", "V1"], p_signal=x.T.astype(np.float64),
                fmt=["16"] * 3, adc_gain=[1000.0] * 3, baseline=[0] * 3, write_dir=str(tmp_path))
    enc = _tiny(leads=2, length=400, lead_names=["V1", "I"])
    for value in ("rec", "rec.hea", "rec.dat"):
        got = enc.load(value, tmp_path)
        np.testing.assert_allclose(got.double().numpy(), _standardised(x[[2, 0]]), atol=5e-3)
    resampled = _tiny(leads=3, length=200, sample_rate=50).load("rec", tmp_path)
    assert resampled.shape == (3, 200)
    with pytest.raises(PolyalignError, match="has no lead"):
        _tiny(leads=2, length=400, lead_names=["V6", "I"]).load("rec", tmp_path)


def test_resnet18_layout_and_batch_with_missing_row(tmp_path):
    np.save(tmp_path / "a.npy", _recording(seed=1))
    np.save(tmp_path / "b.npy", _recording(seed=2))
    enc = _tiny(length=600)
    assert sum(isinstance(m, BasicBlock1d) for m in enc.modules()) == 8  # [2, 2, 2, 2] = ResNet-18
    assert enc.width == 4 * 8
    batch = Collator({"ecg": enc.collate})([(0, {"ecg": enc.load("a.npy", tmp_path)}, None), (1, {}, None),
                                            (2, {"ecg": enc.load("b.npy", tmp_path)}, None)])
    x = batch.inputs["ecg"]
    assert x.shape == (3, 12, 600) and batch.present["ecg"].tolist() == [True, False, True]
    feats = enc(x[batch.present["ecg"]])
    assert feats.shape == (2, 32)
    feats.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_wrong_shapes_are_named(tmp_path):
    np.save(tmp_path / "eight.npy", _recording(leads=8))
    np.save(tmp_path / "flat.npy", np.zeros(600, np.float32))
    np.save(tmp_path / "cube.npy", np.zeros((2, 12, 600), np.float32))
    enc = _tiny(length=600)
    with pytest.raises(PolyalignError, match=r"eight\.npy has shape \(8, 600\); expected \(12, samples\)"):
        enc.load("eight.npy", tmp_path)
    with pytest.raises(PolyalignError, match=r"flat\.npy has shape \(600,\); expected a 2-D array"):
        enc.load("flat.npy", tmp_path)
    with pytest.raises(PolyalignError, match=r"cube\.npy has shape \(2, 12, 600\)"):
        enc.load("cube.npy", tmp_path)
    with pytest.raises(PolyalignError, match="layout time_first"):
        _tiny(length=600, layout="time_first").load("eight.npy", tmp_path)
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(PolyalignError, match=r"cannot read ECG array .*junk\.npy"):
        enc.load("junk.npy", tmp_path)
    with pytest.raises(PolyalignError, match=r"ECG WFDB header \(\.hea\) file not found"):
        enc.load("no-such-record", tmp_path)


def test_ecg_encoder_keeps_the_encoder_contract(tmp_path):
    np.save(tmp_path / "long.npy", _recording(samples=700, seed=1))
    np.save(tmp_path / "time_first.npy", _recording(samples=500, seed=2).T)
    x = _recording(leads=12, samples=600, seed=3)
    wfdb.wrsamp("rec", fs=100, units=["mV"] * 12, sig_name=[f"L{i}" for i in range(12)],
                p_signal=x.T.astype(np.float64), fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12,
                write_dir=str(tmp_path))
    values = ["long.npy", "time_first.npy", "rec", x]  # the length (700) is inferred from the first: rebuilt too
    check_encoder("ecg", values, root=tmp_path, base_width=4, blocks=[1, 1])
