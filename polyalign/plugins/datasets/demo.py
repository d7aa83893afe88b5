"""Dataset ``demo``: a small multimodal dataset of real files whose tuples share a class.

Each tuple has a class ``k`` (0..classes-1) that drives every modality (each modality
independently shows another class with probability ``flip_rate``: a noisy view, so that
combining modalities helps):

* ``image``: a 32x32 PNG of a shape in a colour (both set by ``k``) at a random place and size,
  on a noisy background;
* ``audio``: a WAV tone (16 kHz) whose pitch is set by ``k``, with random length, loudness,
  vibrato and noise;
* ``ecg``: a 12-lead ``.npy`` recording (500 samples, 100 Hz) whose heart rate is set by ``k``,
  with random lead gains, baseline wander and noise;
* ``text``: a ``.txt`` description naming the colour and shape in varying words, plus the
  image's size and position.

``write_demo`` writes the files and ``train/val/test.jsonl`` manifests into a folder; the
``demo`` plugin generates into a cache folder on first use and reads it with ``manifest``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from polyalign.core.errors import PolyalignError
from polyalign.files.cache_dir import cache_root

from .manifest import ManifestConfig, ManifestDataset, OnError

FORMAT_VERSION = 2
MODALITIES = ("image", "audio", "ecg", "text")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (235, 210, 40),
           "magenta": (210, 50, 200), "cyan": (40, 200, 210), "orange": (245, 140, 30), "white": (245, 245, 245)}
SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring", "bar", "star")
SHAPE_WORDS = {"circle": ("circle", "round disc", "dot"), "square": ("square", "box", "block"),
               "triangle": ("triangle", "wedge", "three-sided shape"), "cross": ("cross", "plus sign", "plus"),
               "diamond": ("diamond", "rhombus", "tilted square"), "ring": ("ring", "hoop", "hollow circle"),
               "bar": ("bar", "stripe", "wide band"), "star": ("star", "spiky shape", "four-point star")}
PITCHES_HZ = (262.0, 330.0, 392.0, 494.0, 587.0, 698.0, 880.0, 1047.0)
HEART_RATES = (45.0, 62.0, 80.0, 98.0, 116.0, 134.0, 152.0, 170.0)
MAX_CLASSES = len(SHAPES)
IMAGE_SIZE, AUDIO_RATE, ECG_RATE, ECG_SAMPLES, ECG_LEADS = 32, 16000, 100, 500, 12


def draw_image(k: int, rng: np.random.Generator) -> tuple[np.ndarray, str, str]:
    """A 32x32 RGB image of class ``k``; also its size and position words."""
    from PIL import Image, ImageDraw

    background = rng.integers(60, 140, size=3)
    pixels = np.clip(background + rng.normal(0, 18, size=(IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    r = int(rng.integers(6, 12))
    cx, cy = (int(rng.integers(r + 1, IMAGE_SIZE - r - 1)) for _ in range(2))
    colour = tuple(int(np.clip(c + rng.normal(0, 12), 0, 255)) for c in list(COLOURS.values())[k])
    shape = SHAPES[k]
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "cross":
        w = max(1, r // 3)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, r // 3))
    elif shape == "bar":
        draw.rectangle([cx - r, cy - r // 3, cx + r, cy + r // 3], fill=colour)
    else:
        w = max(1, r // 4)
        draw.polygon([(cx, cy - r), (cx + w, cy - w), (cx + r, cy), (cx + w, cy + w), (cx, cy + r),
                      (cx - w, cy + w), (cx - r, cy), (cx - w, cy - w)], fill=colour)
    size_word = "small" if r <= 8 else "large"
    place = ("upper" if cy < IMAGE_SIZE / 2 else "lower") + " " + ("left" if cx < IMAGE_SIZE / 2 else "right")
    return np.asarray(img), size_word, place


def synth_audio(k: int, rng: np.random.Generator) -> np.ndarray:
    """A 0.6-0.9 s tone of class ``k``'s pitch with harmonics, vibrato, fades and noise."""
    n = int(AUDIO_RATE * rng.uniform(0.6, 0.9))
    t = np.arange(n) / AUDIO_RATE
    f0 = PITCHES_HZ[k] * rng.uniform(0.98, 1.02)
    phase = 2 * np.pi * f0 * t + 0.3 * np.sin(2 * np.pi * rng.uniform(3, 7) * t) + rng.uniform(0, 2 * np.pi)
    wave = np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    wave = rng.uniform(0.15, 0.5) * wave * fade / 1.55 + rng.normal(0, 0.02, size=n)
    return np.clip(wave, -1, 1).astype(np.float32)


LEAD_GAINS = (np.random.default_rng(12345).normal(0, 1, size=(ECG_LEADS, 5)) * 0.3
              + np.array([0.15, -0.1, 1.0, -0.25, 0.3]))  # fixed per-lead mix of the P, Q, R, S, T waves
WAVE_TIMES = np.array([0.10, 0.18, 0.20, 0.22, 0.42])  # P, Q, R, S, T peaks after beat onset (s)
WAVE_WIDTHS = np.array([0.025, 0.008, 0.010, 0.008, 0.045])


def synth_ecg(k: int, rng: np.random.Generator) -> np.ndarray:
    """A 12-lead, 5 s recording at 100 Hz with class ``k``'s heart rate."""
    period = 60.0 / (HEART_RATES[k] * rng.uniform(0.96, 1.04))
    t = np.arange(ECG_SAMPLES) / ECG_RATE + rng.uniform(0, period)
    since = t % period
    stretch = min(1.0, period / 0.8)  # fast hearts compress the beat
    bumps = np.exp(-0.5 * ((since[:, None] - WAVE_TIMES * stretch) / (WAVE_WIDTHS * stretch)) ** 2)  # (T, 5)
    gains = LEAD_GAINS * rng.uniform(0.8, 1.2, size=(ECG_LEADS, 1))
    signal = gains @ bumps.T  # (leads, T)
    wander = 0.1 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 2 * np.pi))
    return (signal + wander + rng.normal(0, 0.03, size=signal.shape)).astype(np.float16)


def describe(k: int, size_word: str, place: str, rng: np.random.Generator) -> str:
    """A caption of class ``k`` in varying words."""
    colour = list(COLOURS)[k]
    shape = str(rng.choice(SHAPE_WORDS[SHAPES[k]]))
    first = str(rng.choice(["a", "one", "the"]))
    templates = [f"{first} {size_word} {colour} {shape} in the {place}",
                 f"{first} {colour} {shape}, {size_word}, {place}",
                 f"{place}: {first} {size_word} {shape} coloured {colour}",
                 f"there is {first} {colour} {shape} toward the {place}"]
    return str(rng.choice(templates))


def write_demo(folder: str | Path, classes: int = 4, n_train: int = 600, n_val: int = 100,
               n_test: int = 200, missing_rate: float = 0.1, seed: int = 0, flip_rate: float = 0.15) -> Path:
    """Write the demo files and ``train/val/test.jsonl`` manifests into ``folder``; return it.

    ``label`` is the tuple's class; each modality shows another class with probability
    ``flip_rate``. In the train split each modality is left out with probability
    ``missing_rate`` (every row keeps at least two); val and test are complete.
    """
    import soundfile as sf
    from PIL import Image

    if not 2 <= classes <= MAX_CLASSES:
        raise PolyalignError(f"demo classes must be between 2 and {MAX_CLASSES}, got {classes}")
    folder = Path(folder)
    for sub in MODALITIES:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        rows = []
        for i in range(n):
            k = i % classes
            shown = {m: (int(rng.integers(1, classes)) + k) % classes if rng.random() < flip_rate else k
                     for m in MODALITIES}
            name = f"{split}-{i:05d}"
            pixels, size_word, place = draw_image(shown["image"], rng)
            Image.fromarray(pixels).save(folder / "image" / f"{name}.png")
            sf.write(folder / "audio" / f"{name}.wav", synth_audio(shown["audio"], rng), AUDIO_RATE,
                     subtype="PCM_16")
            np.save(folder / "ecg" / f"{name}.npy", synth_ecg(shown["ecg"], rng))
            caption = describe(shown["text"], size_word, place, rng)
            (folder / "text" / f"{name}.txt").write_text(caption + "\n", encoding="utf-8")
            row = {"id": name, "label": k, "image": f"image/{name}.png", "audio": f"audio/{name}.wav",
                   "ecg": f"ecg/{name}.npy", "text": f"text/{name}.txt"}
            if split == "train" and missing_rate > 0:
                drop = [m for m in MODALITIES if rng.random() < missing_rate][: len(MODALITIES) - 2]
                row = {key: v for key, v in row.items() if key not in drop}
            rows.append(row)
        order = rng.permutation(n)
        lines = "".join(json.dumps(rows[j]) + "\n" for j in order)
        (folder / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    (folder / "README.md").write_text(
        f"# polyalign demo data\n\nWritten by polyalign (demo format {FORMAT_VERSION}): {classes} classes, "
        f"{n_train}/{n_val}/{n_test} train/val/test tuples, flip rate {flip_rate}, seed {seed}.\nEach row of "
        f"`train/val/test.jsonl` is one tuple: a PNG image, a WAV tone, a 12-lead `.npy` ECG and a `.txt` "
        f"caption sharing the class in `label` (each shows another class with probability {flip_rate}).\n"
        f"Train on it with `data: {{plugin: manifest, path: <this folder>}}`.\n", encoding="utf-8")
    return folder


class DemoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="folder to generate into (if empty) and read; default: a cache folder")
    classes: int = Field(4, ge=2, le=MAX_CLASSES, description="number of classes shared by the modalities")
    n_train: int = Field(600, ge=1, description="train tuples")
    n_val: int = Field(100, ge=0, description="val tuples")
    n_test: int = Field(200, ge=0, description="test tuples")
    missing_rate: float = Field(0.1, ge=0, lt=1, description="chance a train modality is left out")
    flip_rate: float = Field(0.15, ge=0, lt=1, description="chance a modality shows another class (noisy view)")
    seed: int = Field(0, description="data seed (fixed, so every run sees the same files)")
    on_error: OnError = Field("raise", description="raise or skip rows whose files fail to load")


def ensure_demo(config: DemoConfig) -> Path:
    """The folder holding the demo data, generated first if needed (atomically, by rename)."""
    params = (FORMAT_VERSION, config.classes, config.n_train, config.n_val, config.n_test,
              config.missing_rate, config.seed, config.flip_rate)
    if config.path is not None:
        folder = Path(config.path).expanduser()
    else:
        digest = hashlib.sha1(repr(params).encode()).hexdigest()[:10]
        folder = cache_root() / f"demo-{digest}"
    if (folder / "train.jsonl").is_file():
        return folder
    if folder.exists() and any(folder.iterdir()):
        raise PolyalignError(f"data.path: {folder} is not empty and holds no train.jsonl; give an empty "
                             f"or new folder for the demo data")
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        write_demo(tmp, config.classes, config.n_train, config.n_val, config.n_test, config.missing_rate,
                   config.seed, config.flip_rate)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    except OSError as exc:
        if (folder / "train.jsonl").is_file():  # another process finished first
            return folder
        raise PolyalignError(f"could not write the demo data to {folder}: {exc.strerror or exc}. Set "
                             f"data.path or POLYALIGN_CACHE to a writable folder.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def class_names(classes: int) -> list[str]:
    """The demo's class names, colour and shape: 'red circle', 'green square', ..."""
    return [f"{colour} {shape}" for colour, shape in zip(COLOURS, SHAPES[:classes])]


class DemoDataset(ManifestDataset):
    """The demo's manifests, with the names of its classes (``label_names``)."""

    def __init__(self, config: ManifestConfig, label_names: list[str]):
        super().__init__(config)
        self.label_names = label_names


def build_demo(config: DemoConfig) -> DemoDataset:
    """Factory for ``demo``: generate on first use, then read the manifests."""
    folder = ensure_demo(config)
    return DemoDataset(ManifestConfig(path=str(folder), on_error=config.on_error), class_names(config.classes))
