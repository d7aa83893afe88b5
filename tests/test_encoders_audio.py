"""Encoder ``audio``: WAV/FLAC files, resampling, crop/pad, log-mel CNN and wav2vec2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import polyalign
from polyalign.core.batch import Collator
from polyalign.core.errors import PolyalignError
from polyalign.testing import check_encoder


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: torch.Tensor, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave.double().numpy()))
    return float(np.fft.rfftfreq(wave.shape[0], 1 / rate)[spectrum.argmax()])


def _cnn(**options):
    return polyalign.build("encoder", "audio", sample_rate=8000, clip_seconds=1.0, n_mels=16, n_fft=256,
                           channels=[4, 8], **options)


def test_resamples_mixes_and_crops_or_pads(tmp_path):
    left, right = _tone(440.0, 1.5, 22050), _tone(440.0, 1.5, 22050) * 0.5
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 22050)
    sf.write(tmp_path / "short.flac", _tone(1000.0, 0.25, 8000), 8000)
    enc = _cnn()
    wave = enc.load(Path("stereo.wav"), tmp_path)
    assert wave.shape == (8000,)
    assert abs(_peak_hz(wave, 8000) - 440.0) <= 1.0  # the tone survives resampling to 8 kHz
    assert abs(float(wave.abs().max()) - 0.375) < 0.02  # mono = mean of the channels: 0.5 * 0.75
    short = enc.load(Path("short.flac"), tmp_path)
    assert short.shape == (8000,) and torch.all(short[2000:] == 0)  # zero-padded after 0.25 s
    torch.testing.assert_close(short[:2000], torch.from_numpy(_tone(1000.0, 0.25, 8000)), atol=1e-4, rtol=0)


def test_crop_positions(tmp_path):
    ramp = np.linspace(-1, 1, 16000, dtype=np.float32)
    sf.write(tmp_path / "ramp.wav", ramp, 8000, subtype="FLOAT")
    start = _cnn(crop="start").load(Path("ramp.wav"), tmp_path)
    center = _cnn(crop="center").load(Path("ramp.wav"), tmp_path)
    np.testing.assert_allclose(start.numpy(), ramp[:8000])
    np.testing.assert_allclose(center.numpy(), ramp[4000:12000])
    rand = _cnn(crop="random")
    rand.eval()
    np.testing.assert_allclose(rand.load(Path("ramp.wav"), tmp_path).numpy(), ramp[4000:12000])  # center at eval


def test_cnn_batch_with_missing_row(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(300.0, 0.8, 16000), 16000)
    sf.write(tmp_path / "b.wav", _tone(900.0, 1.2, 16000), 16000)
    enc = _cnn()
    batch = Collator({"audio": enc.collate})([(0, {"audio": enc.load(Path("a.wav"), tmp_path)}, None), (1, {}, None),
                                              (2, {"audio": enc.load(Path("b.wav"), tmp_path)}, None)])
    assert batch.present["audio"].tolist() == [True, False, True]
    feats = enc(batch.inputs["audio"][batch.present["audio"]])
    assert feats.shape == (2, 8) and enc.width == 8
    feats.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_wav2vec2_backbone_and_local_weights(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(300.0, 0.5, 16000), 16000)
    enc = polyalign.build("encoder", "audio", backbone="wav2vec2", arch="tiny", clip_seconds=0.5)
    x = enc.collate([enc.load(Path("a.wav"), tmp_path)] * 2)
    feats = enc(x)
    assert feats.shape == (2, 64) and enc.width == 64
    feats.sum().backward()
    torch.save(enc.backbone.model.state_dict(), tmp_path / "w2v.pth")
    again = polyalign.build("encoder", "audio", backbone="wav2vec2", arch="tiny", clip_seconds=0.5,
                            weights=str(tmp_path / "w2v.pth"), freeze=True)
    for name, value in enc.backbone.model.state_dict().items():
        assert torch.equal(again.backbone.model.state_dict()[name], value), name
    assert not any(p.requires_grad for p in again.parameters())


def test_corrupt_and_missing_audio(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00garbage")
    enc = _cnn()
    with pytest.raises(PolyalignError, match=r"cannot read audio file .*bad\.wav"):
        enc.load(Path("bad.wav"), tmp_path)
    with pytest.raises(PolyalignError, match=r"audio file not found: .*gone\.flac"):
        enc.load(Path("gone.flac"), tmp_path)


def test_audio_encoders_keep_the_encoder_contract(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(300.0, 0.8, 16000), 16000)
    sf.write(tmp_path / "b.flac", _tone(900.0, 1.2, 22050), 22050)
    files = [Path("a.wav"), Path("b.flac")]
    check_encoder("audio", files, root=tmp_path, sample_rate=8000, n_mels=16, n_fft=256, channels=[4, 8])
    check_encoder("audio", files, root=tmp_path, backbone="wav2vec2", arch="tiny", clip_seconds=0.5)
