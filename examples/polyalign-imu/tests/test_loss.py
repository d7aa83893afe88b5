"""Tests of the margin_clip loss: its formula in float64, and polyalign's loss checks."""

import torch
import torch.nn.functional as F

import polyalign
from polyalign.plugin import check_loss


def test_margin_clip_lowers_each_positive_by_the_margin():
    g = torch.Generator().manual_seed(0)
    z = {m: F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1) for m in ("imu", "caption")}
    loss = polyalign.build("loss", "margin_clip", temperature=0.1, margin=0.3).double()
    scale = loss.temperature.scale.detach()
    logits = scale * (z["imu"] @ z["caption"].T - 0.3 * torch.eye(6, dtype=torch.float64))
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert torch.allclose(loss(z).loss, expected, rtol=1e-12)
    clip = polyalign.build("loss", "clip", temperature=0.1).double()  # with no margin it is CLIP
    assert torch.allclose(polyalign.build("loss", "margin_clip", temperature=0.1, margin=0.0).double()(z).loss,
                          clip(z).loss, rtol=1e-12)


def test_margin_clip_keeps_the_loss_contract():
    # scalar loss and finite gradients for 2 to 5 modalities, the modalities' order, rows marked
    # absent in `present`, and `score`: shape, and each query's own tuple ranked first
    check_loss("margin_clip", margin=0.2)
