"""Encoder ``image``: PNG/JPEG files through timm, local weights only, batches with holes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from pydantic import ValidationError
from safetensors.torch import save_file

import polyalign
from polyalign.core.batch import Collator
from polyalign.core.errors import PolyalignError
from polyalign.testing import check_encoder


def _write_images(folder):
    Image.fromarray(np.full((20, 30, 3), (255, 0, 0), np.uint8)).save(folder / "red.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "noise.jpg", quality=90)


def _tiny(**options):
    return polyalign.build("encoder", "image", model="test_resnet", image_size=32, **options)


def test_loads_png_and_jpeg_normalised(tmp_path):
    _write_images(tmp_path)
    enc = _tiny()
    red = enc.load(Path("red.png"), tmp_path)
    assert red.shape == (3, 32, 32) and red.dtype == torch.float32
    mean = np.array(enc.backbone.pretrained_cfg["mean"], dtype=np.float64)
    std = np.array(enc.backbone.pretrained_cfg["std"], dtype=np.float64)
    expected = (np.array([1.0, 0.0, 0.0]) - mean) / std  # a solid red image, formula in float64
    np.testing.assert_allclose(red.double().mean(dim=(1, 2)).numpy(), expected, atol=1e-5)
    assert enc.load(Path("noise.jpg"), tmp_path).shape == (3, 32, 32)
    grey = _tiny(channels=1).load(Path("red.png"), tmp_path)
    assert grey.shape == (1, 32, 32)


def test_batch_with_missing_row_gives_features_and_gradients(tmp_path):
    _write_images(tmp_path)
    enc = _tiny()
    collate = Collator({"image": enc.collate})
    batch = collate([(0, {"image": enc.load(Path("red.png"), tmp_path)}, None), (1, {}, None),
                     (2, {"image": enc.load(Path("noise.jpg"), tmp_path)}, None)])
    assert batch.present["image"].tolist() == [True, False, True]
    x = batch.inputs["image"]
    assert x.shape == (3, 3, 32, 32) and torch.all(x[1] == 0)
    feats = enc(x)
    assert feats.shape == (3, enc.width) and enc.width == enc.backbone.num_features
    feats[batch.present["image"]].sum().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)


def test_vit_gets_the_input_size(tmp_path):
    _write_images(tmp_path)
    enc = polyalign.build("encoder", "image", model="test_vit", image_size=32)
    assert enc(enc.collate([enc.load(Path("red.png"), tmp_path)] * 2)).shape == (2, enc.width)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_from_a_local_file(tmp_path, suffix):
    source = timm.create_model("test_resnet", pretrained=False, num_classes=7)  # with a classifier head
    state = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    enc = _tiny(pretrained=str(path))
    for name, value in enc.backbone.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_pretrained_errors(tmp_path):
    with pytest.raises(ValidationError, match="never does"):
        _tiny(pretrained=True)
    with pytest.raises(PolyalignError, match="weights file not found"):
        _tiny(pretrained=str(tmp_path / "nope.pth"))
    other = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    save_file(other.state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(PolyalignError, match="does not fit the model"):
        _tiny(pretrained=str(tmp_path / "other.safetensors"))
    with pytest.raises(PolyalignError, match="unknown timm model 'resnet1888'"):
        polyalign.build("encoder", "image", model="resnet1888")


def test_freeze_keeps_backbone_fixed_and_in_eval_mode():
    enc = _tiny(freeze=True)
    enc.train()
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    assert not enc.backbone.training


def test_augmentation_only_in_training(tmp_path):
    _write_images(tmp_path)
    enc = _tiny(augment=True)
    torch.manual_seed(0)
    enc.train()
    train_views = [enc.load(Path("noise.jpg"), tmp_path) for _ in range(4)]
    assert any(not torch.equal(train_views[0], v) for v in train_views[1:])
    enc.eval()
    assert torch.equal(enc.load(Path("noise.jpg"), tmp_path), enc.load(Path("noise.jpg"), tmp_path))


def test_undecodable_and_missing_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    enc = _tiny()
    with pytest.raises(PolyalignError, match=r"cannot decode image .*bad\.png"):
        enc.load(Path("bad.png"), tmp_path)
    with pytest.raises(PolyalignError, match=r"image file not found: .*gone\.png"):
        enc.load(Path("gone.png"), tmp_path)
    (tmp_path / "red.png").write_bytes(b"")
    with pytest.raises(PolyalignError, match=r"expected image file, got the text 'red\.png': a str is text, never a "
                                             r"path.*pass pathlib\.Path\('red\.png'\)"):
        enc.load("red.png", tmp_path)  # even where that file exists


def test_image_encoder_keeps_the_encoder_contract(tmp_path):
    _write_images(tmp_path)
    check_encoder("image", [Path("red.png"), Path("noise.jpg")], root=tmp_path, model="test_resnet", image_size=32)
    check_encoder("image", [Path("red.png"), Path("noise.jpg")], root=tmp_path, model="test_vit", image_size=32,
                  channels=1)
