"""Encoder ``audio``: WAV/FLAC files -> fixed-length clips -> log-mel CNN or wav2vec2."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from polyalign.plugin import Encoder, FileBytes, Part, PolyalignError, named_layer_groups, resolve_file

from .checkpointing import checkpoint_blocks, checkpointed_sequential
from .decode_reason import decode_reason
from .pretrained import load_weights_into, local_weights_file
from .resample import resample

Wav2Vec2Arch = Literal["base", "large", "large_lv60k", "tiny"]

MAX_SECONDS = 600.0  # ten minutes of 48 kHz stereo decode to 230 MB of float32


class AudioConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample_rate: int = Field(16000, ge=1000, description="clips are resampled to this rate (Hz)")
    clip_seconds: float = Field(1.0, gt=0, description="clips are cropped or zero-padded to this length")
    max_seconds: float = Field(MAX_SECONDS, gt=0, description="longest recording decoded (its length read from "
                                                             "its header first); longer ones are refused")
    crop: Literal["start", "center", "random"] = Field(
        "center", description="where a long clip is cut; random = a random window in training, center otherwise")
    backbone: Literal["cnn", "wav2vec2"] = Field("cnn", description="log-mel CNN, or torchaudio's wav2vec2")
    n_mels: int = Field(64, ge=8, description="mel bands (cnn)")
    n_fft: int = Field(400, ge=16, description="FFT size of the spectrogram (cnn)")
    hop_length: int | None = Field(None, ge=1, description="spectrogram hop (cnn; default: 10 ms)")
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1,
                                description="channels of the CNN's conv blocks (cnn)")
    arch: Wav2Vec2Arch = Field("base", description="wav2vec2 size; tiny = 2 layers x 64 wide, for tests")
    weights: str | None = Field(None, description="local .safetensors/.pth state dict for the backbone")
    freeze: bool = Field(False, description="keep the backbone fixed (eval mode, no gradients)")
    grad_checkpointing: bool = Field(False, description="recompute activations in backward, per conv block "
                                                        "(cnn) or transformer layer (wav2vec2): less memory "
                                                        "for about one more forward")


SHORT_CHUNK = re.compile(r"\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)")


def truncated_chunk(log: str) -> str | None:
    """The line of libsndfile's header log saying a chunk is shorter than its header announces
    (``data : 32000 (should be 15978)``), i.e. a truncated file; None when there is none. The
    sizes 0 and 0xFFFFFFFF are placeholders of streamed files and are not counted."""
    if "should be" not in log:
        return None
    for line in log.splitlines():
        match = SHORT_CHUNK.match(line)
        if match:
            announced, present = int(match.group(2)), int(match.group(3))
            if present < announced and announced not in (0, 0xFFFFFFFF):
                return line.strip()
    return None


def read_audio(path: Path | FileBytes, max_seconds: float = MAX_SECONDS) -> tuple[torch.Tensor, int]:
    """A mono float32 waveform and its sample rate, read with soundfile; a recording longer than
    ``max_seconds`` (from its header) is refused before it is decoded."""
    import soundfile as sf

    try:
        with path.open("rb") as raw, sf.SoundFile(raw) as fh:
            seconds = fh.frames / max(fh.samplerate, 1)
            if seconds > max_seconds or fh.channels > 64:
                raise PolyalignError(f"audio file {path} holds {seconds:,.0f} s in {fh.channels} channel(s), more than "
                                     f"the {max_seconds:g} s (and 64 channels) the audio encoder decodes (its option "
                                     f"max_seconds); cut it, or raise max_seconds")
            short = truncated_chunk(fh.extra_info)
            data, rate = fh.read(dtype="float32", always_2d=True), fh.samplerate
    except PolyalignError:
        raise
    except Exception as exc:
        raise PolyalignError(f"cannot read audio file {path}: {decode_reason(exc)}. polyalign reads WAV, FLAC and "
                             f"other formats libsndfile knows.") from exc
    if short:
        raise PolyalignError(f"audio file {path} is truncated: its header announces more data than the "
                             f"file holds (libsndfile: {short!r}). Re-export or re-download it.")
    if data.shape[0] == 0:
        raise PolyalignError(f"audio file {path} holds no samples")
    return torch.from_numpy(data.mean(axis=1)), int(rate)


def fit_length(wave: torch.Tensor, length: int, offset: int) -> torch.Tensor:
    """Cut ``length`` samples from ``offset``, or zero-pad a short clip at the end."""
    if wave.shape[0] >= length:
        return wave[offset: offset + length]
    return torch.nn.functional.pad(wave, (0, length - wave.shape[0]))


class LogMelCNN(nn.Module):
    """Waveforms ``(B, N)`` -> log-mel spectrogram -> conv blocks -> global average ``(B, C)``."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, channels: list[int],
                 grad_checkpointing: bool = False):
        super().__init__()
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length,
                                                        n_mels=n_mels)
        blocks: list[nn.Module] = []
        for c_in, c_out in zip([1, *channels[:-1]], channels):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
        self.blocks = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.width = channels[-1]
        self.grad_checkpointing = grad_checkpointing

    def layer_parts(self) -> list[list[Part]]:
        """Each conv block (convolution + batch norm)."""
        convs = [m for m in self.blocks if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        return [convs[i:i + 2] for i in range(0, len(convs), 2)]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = torch.log(self.mel(wave.float()) + 1e-6)
        mu = spec.mean(dim=(1, 2), keepdim=True)
        sd = spec.std(dim=(1, 2), keepdim=True)
        x = ((spec - mu) / (sd + 1e-5)).unsqueeze(1)
        if self.grad_checkpointing:  # one segment per conv block (conv, norm, ReLU, pool)
            return checkpointed_sequential(self.blocks, 4, x)
        return self.blocks(x)


def create_wav2vec2(arch: Wav2Vec2Arch) -> nn.Module:
    """torchaudio's wav2vec2 architecture (random init; weights come from a local file)."""
    from torchaudio import models

    if arch == "tiny":
        return models.wav2vec2_model(
            extractor_mode="group_norm", extractor_conv_layer_config=[(32, 10, 5), (32, 3, 2), (32, 3, 2),
                                                                      (32, 3, 2), (32, 2, 2)],
            extractor_conv_bias=False, encoder_embed_dim=64, encoder_projection_dropout=0.0,
            encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4, encoder_num_layers=2,
            encoder_num_heads=4, encoder_attention_dropout=0.0, encoder_ff_interm_features=128,
            encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False,
            encoder_layer_drop=0.0, aux_num_out=None)
    return {"base": models.wav2vec2_base, "large": models.wav2vec2_large,
            "large_lv60k": models.wav2vec2_large_lv60k}[arch]()


class Wav2Vec2Backbone(nn.Module):
    """Waveforms ``(B, N)`` -> wav2vec2 transformer states -> mean over time ``(B, D)``."""

    def __init__(self, arch: Wav2Vec2Arch):
        super().__init__()
        self.model = create_wav2vec2(arch)
        self.width = int(self.model.encoder.feature_projection.projection.out_features)

    def layer_parts(self) -> list[list[Part]]:
        """The feature extractor, projection, positional convolution (and the layer norm applied before
        the layers in post-norm models), then each transformer layer (the last with a final layer norm)."""
        transformer = self.model.encoder.transformer
        stem = [self.model.feature_extractor, self.model.encoder.feature_projection, transformer.pos_conv_embed,
                transformer.layer_norm if transformer.layer_norm_first else None]
        return [stem, *[[layer] for layer in transformer.layers]]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        states, _ = self.model(wave)
        return states.mean(dim=1)


class AudioEncoder(Encoder):
    """WAV/FLAC clips (soundfile, resampled, cropped/padded) into a log-mel CNN or wav2vec2

    Audio files -> mono clips at ``sample_rate`` -> backbone -> ``(B, width)``."""

    name = "audio"
    Options = AudioConfig

    def __init__(self, config: AudioConfig):
        super().__init__()
        self.config = config
        self.length = max(1, round(config.clip_seconds * config.sample_rate))
        if config.backbone == "cnn":
            hop = config.hop_length or max(1, config.sample_rate // 100)
            self.backbone: nn.Module = LogMelCNN(config.sample_rate, config.n_fft, hop, config.n_mels,
                                                 config.channels, config.grad_checkpointing)
        else:
            self.backbone = Wav2Vec2Backbone(config.arch)
        self.width = int(self.backbone.width)
        if config.grad_checkpointing and config.backbone == "wav2vec2":
            checkpoint_blocks(self.backbone.model.encoder.transformer.layers)
        if config.weights:
            what = f"encoder 'audio' weights ({config.backbone})"
            load_weights_into(self.backbone.model if config.backbone == "wav2vec2" else self.backbone,
                              local_weights_file(config.weights, what), what)
        if config.freeze:
            self.backbone.requires_grad_(False)

    def layer_groups(self) -> list[list[str]]:
        """The backbone's: the CNN's conv blocks, or wav2vec2's stem and transformer layers."""
        return named_layer_groups(self, self.backbone.layer_parts())

    def merge_for_export(self) -> dict[str, Any]:
        """The exported weights replace the ``weights`` file: the export does not need it."""
        return {"weights": None}

    def train(self, mode: bool = True) -> "AudioEncoder":
        super().train(mode)
        if self.config.freeze:
            self.backbone.eval()
        return self

    def load_options(self) -> dict[str, Any]:
        return {"sample_rate": self.config.sample_rate, "clip_seconds": self.config.clip_seconds,
                "crop": self.config.crop}

    def decode(self, value: Any, root: Path | None) -> torch.Tensor:
        """Read, mix to mono and resample one file; cropped or padded to the clip length too,
        unless the crop is random (then :meth:`finish` cuts it at each use)."""
        wave, rate = read_audio(resolve_file(value, root, "audio"), self.config.max_seconds)
        wave = resample(wave, rate, self.config.sample_rate)
        return wave if self.config.crop == "random" else self._cut(wave, self.config.crop)

    def finish(self, wave: torch.Tensor, train: bool) -> torch.Tensor:
        """The clip of a decoded wave (a random window in training with ``crop: random``)."""
        if self.config.crop != "random":
            return wave
        return self._cut(wave, "random" if train else "center")

    def _cut(self, wave: torch.Tensor, crop: str) -> torch.Tensor:
        extra = max(0, wave.shape[0] - self.length)
        if crop == "random":
            offset = int(torch.randint(0, extra + 1, ()))
        else:
            offset = 0 if crop == "start" else extra // 2
        return fit_length(wave, self.length, offset)

    def export_example(self, batch: int) -> torch.Tensor:
        return 0.1 * torch.randn(batch, self.length)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.backbone(wave)
