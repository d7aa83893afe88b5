"""Tests of the imu encoder, run with `pytest tests` inside the plugin's folder."""

import numpy as np
import torch

import polyalign


def test_imu_encoder_loads_pads_and_encodes(tmp_path):
    np.savetxt(tmp_path / "a.csv", np.ones((40, 3)) + np.arange(40)[:, None], delimiter=",",
               header="x,y,z", comments="")
    np.save(tmp_path / "b.npy", np.zeros((25, 3), np.float32))
    enc = polyalign.build("encoder", "imu", hidden=8, layers=2)  # found through the entry point
    a, b = enc.load("a.csv", tmp_path), enc.load("b.npy", tmp_path)
    assert a.shape == (40, 3) and torch.allclose(a.mean(dim=0), torch.zeros(3), atol=1e-5)
    batch = enc.collate([a, b])
    assert batch["signal"].shape == (2, 40, 3) and batch["mask"][1].sum() == 25
    out = enc(batch)
    assert out.shape == (2, 8)
    out.sum().backward()
