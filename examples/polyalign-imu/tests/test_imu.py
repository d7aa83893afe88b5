"""Tests of the imu encoder, run with `pytest tests` inside the plugin's folder."""

from pathlib import Path

import numpy as np
import torch

import polyalign
from polyalign.plugin import check_encoder


def test_imu_encoder_keeps_the_encoder_contract(tmp_path):
    rng = np.random.default_rng(0)
    np.savetxt(tmp_path / "a.csv", rng.normal(size=(40, 3)), delimiter=",", header="x,y,z", comments="")
    np.save(tmp_path / "b.npy", rng.normal(size=(25, 3)).astype(np.float32))
    # loads each value, collates, checks (batch, width) features, that a recording's features do
    # not depend on the others in its batch, batches with a missing row, and the gradients
    check_encoder("imu", [Path("a.csv"), Path("b.npy"), rng.normal(size=(9, 3))], root=tmp_path, hidden=8, layers=2)


def test_imu_encoder_removes_gravity_and_pads(tmp_path):
    np.savetxt(tmp_path / "a.csv", np.ones((40, 3)) + np.arange(40)[:, None], delimiter=",",
               header="x,y,z", comments="")
    np.save(tmp_path / "b.npy", np.zeros((25, 3), np.float32))
    enc = polyalign.build("encoder", "imu", hidden=8, layers=2)  # found through the entry point
    a, b = enc.load(Path("a.csv"), tmp_path), enc.load(Path("b.npy"), tmp_path)
    assert a.shape == (40, 3) and torch.allclose(a.mean(dim=0), torch.zeros(3), atol=1e-5)
    batch = enc.collate([a, b])
    assert batch["signal"].shape == (2, 40, 3) and batch["mask"][1].sum() == 25
