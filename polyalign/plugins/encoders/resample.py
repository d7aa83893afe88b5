"""Resampling signals (audio, ECG) between rates, with one filter per pair of rates."""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=64)
def resampler(source_rate: int, target_rate: int) -> torch.nn.Module:
    """torchaudio's resampler from ``source_rate`` to ``target_rate`` Hz, built once per pair:
    building its windowed-sinc kernel costs far more than applying it to one clip."""
    import torchaudio

    return torchaudio.transforms.Resample(source_rate, target_rate)


def resample(wave: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    """``wave`` (``(..., time)``) at ``target_rate`` (unchanged when the rates are equal)."""
    if source_rate == target_rate:
        return wave
    with torch.no_grad():
        return resampler(source_rate, target_rate)(wave)
