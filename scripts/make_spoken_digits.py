"""Two multi-modal sets of real files made here, nothing downloaded: scanned digits, speech, text.

    python scripts/make_spoken_digits.py redundant data/spoken-digits    # 5 modalities, one digit each
    python scripts/make_spoken_digits.py joint data/spoken-choice         # image fixed by audio + text together
    python scripts/make_spoken_digits.py joint-features data/digit-choice # the same rule, as measured features

Both read scikit-learn's bundled 8 x 8 handwritten digits (1797 scans by 43 writers; the scans of
the train split never appear in val or test) and speak with espeak-ng (Debian: ``apt-get install
espeak-ng``) in several voices, speeds and pitches; every tuple gets its own noisy copy of an
utterance (random gain, time shift, background noise). Seeded: the same command writes the same
files. Output: ``train/val/test.jsonl`` manifests (docs/your-files.md), a column per modality
holding a path (PNG, WAV) or inline text, a ``label``, read by ``data: {plugin: manifest, path: ...}``.

- ``redundant`` (every modality names the same digit k, so any one predicts the others):
  ``image`` (a 32 x 32 PNG of a scan of k), ``speech_en`` (k spoken in English, one of 4
  voices), ``speech_de`` (k spoken in German), ``caption_en`` (an English sentence naming k in
  words or as a numeral), ``caption_de`` (a German one). polyalign/recipes/spoken-digits.yaml (M = 3:
  image, speech_en, caption_en) and polyalign/recipes/spoken-digits-5.yaml (all five).
- ``joint`` (Symile-M3-like: the information about the image is joint): ``text`` is two words
  naming a digit w ("number seven", "read 7"), ``speech`` is a random digit spoken in English
  (low male voices) or in German (high female voices), and the ``image`` shows w when the speech
  is English and w + 5 (mod 10) when it is German. Neither the speech alone (its language says
  nothing about w) nor the text alone (one of two digits, 0.5 at best) fixes the image; both
  together do.
  polyalign/recipes/spoken-choice.yaml.
- ``joint-features``: the ``joint`` rule on features measured from the same real files, read by
  ``vector`` encoders (seconds a run, where the image, audio and text encoders take minutes):
  ``scan`` holds the 64 pixels of a real scan of w (in place of the text), ``voice`` 40 numbers
  measured from the utterance (mean and standard deviation over time of 20 log-mel bands), and
  ``image`` the 64 pixels of a scan of w (English voice) or w + 5 (German voice).
  polyalign/recipes/digit-choice.yaml.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np

RATE = 8000
WORDS = {"en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
         "de": ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"]}
VOICES = {"en": ["en+m1", "en+m3", "en+f2", "en+f4"], "de": ["de+m1", "de+m3", "de+f2", "de+f4"]}
SPEEDS = (130, 170)
PITCHES = (35, 65)
CAPTIONS = {"en": ["a handwritten {}", "the digit {}", "a scanned {}", "someone wrote a {}", "{}, written by hand",
                   "an image of the number {}"],
            "de": ["eine handgeschriebene {}", "die Ziffer {}", "eine gescannte {}", "jemand schrieb eine {}",
                   "{}, von Hand geschrieben", "ein Bild der Zahl {}"]}
SPLITS = {"train": 1000, "val": 200, "test": 300}
SIZES = {"redundant": {"train": 800, "val": 100, "test": 300}, "joint": SPLITS,
         "joint-features": {"train": 4000, "val": 200, "test": 300}}
SHIFT = 5
"""joint: German speech shows the digit SHIFT after the text's (mod 10)."""
LEADS = ("number", "digit", "say", "read", "take", "the")
"""Tuples per split by default: the redundant set is learnt from fewer (every modality names the digit)."""


def speak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's utterance of ``text`` as float32 samples at :data:`RATE`, silence trimmed."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(raw)) as w:
        rate, data = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    x = data.astype(np.float32) / 32768.0
    n = int(round(len(x) * RATE / rate))  # espeak-ng speaks at 22050 Hz: linear resampling to 8 kHz
    x = np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)
    loud = np.nonzero(np.abs(x) > 0.02)[0]
    return x[loud[0]:loud[-1] + 1] if loud.size else x


def utterances(languages: list[str]) -> dict[tuple[str, int], list[np.ndarray]]:
    """Every digit word in every voice, speed and pitch: ``{(language, digit): [samples, ...]}``."""
    bank: dict[tuple[str, int], list[np.ndarray]] = {}
    for lang in languages:
        for k, word in enumerate(WORDS[lang]):
            bank[(lang, k)] = [speak(word, v, s, p) for v in VOICES[lang] for s in SPEEDS for p in PITCHES]
    return bank


def noisy(x: np.ndarray, rng: np.random.Generator, seconds: float = 1.0) -> np.ndarray:
    """``x`` with a random gain, placed at a random offset in a clip of ``seconds``, plus noise."""
    n = int(RATE * seconds)
    out = np.zeros(n, dtype=np.float32)
    x = x[:n] * rng.uniform(0.4, 1.0)
    start = int(rng.integers(0, n - len(x) + 1))
    out[start:start + len(x)] = x
    out += rng.normal(0, rng.uniform(0.002, 0.02), n).astype(np.float32)
    return np.clip(out, -1, 1)


def write_wav(path: Path, x: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((x * 32767).astype(np.int16).tobytes())


def write_png(path: Path, scan: np.ndarray) -> None:
    """An 8 x 8 scan (values 0..16) as a 32 x 32 greyscale PNG (bilinear)."""
    from PIL import Image

    Image.fromarray((scan * (255 / 16)).astype(np.uint8), mode="L").resize((32, 32), Image.BILINEAR).save(path)


def scans_by_split(seed: int) -> dict[str, dict[int, np.ndarray]]:
    """scikit-learn's digit scans split 70/10/20 by scan, then grouped by class: no scan in two splits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    cut = [int(0.7 * len(order)), int(0.8 * len(order))]
    parts = dict(zip(SPLITS, np.split(order, cut)))
    return {s: {k: digits.images[idx[digits.target[idx] == k]] for k in range(10)} for s, idx in parts.items()}


def voice_features(x: np.ndarray) -> list[float]:
    """Mean and standard deviation over 32 ms frames of 20 log-mel band energies of ``x`` (40 numbers)."""
    frame, hop, bands = 256, 128, 20
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop] * np.hanning(frame)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = np.interp(np.linspace(mel(60), mel(RATE / 2), bands + 2), mel(np.linspace(0, RATE / 2, 1000)),
                      np.linspace(0, RATE / 2, 1000))
    freqs = np.fft.rfftfreq(frame, 1 / RATE)
    fb = np.stack([np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
                   for lo, mid, hi in zip(edges, edges[1:], edges[2:])])
    logmel = np.log(power @ fb.T + 1e-6)
    return [round(float(v), 4) for v in np.concatenate([logmel.mean(0), logmel.std(0)])]


def caption(lang: str, k: int, rng: np.random.Generator) -> str:
    name = WORDS[lang][k] if rng.random() < 0.7 else str(k)
    return str(rng.choice(CAPTIONS[lang])).format(name)


def write(kind: str, out: Path, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """Write the ``kind`` set (``redundant``, ``joint`` or ``joint-features``) into ``out``; returns ``out``."""
    sizes = sizes or SIZES[kind]
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scans = scans_by_split(seed)
    bank = utterances(["en", "de"])
    # joint: English is spoken by the low (male) voices, German by the high (female) ones, so that
    # the language is heard in a second (a tiny audio CNN learns it in a few epochs), not only in
    # the words; still nothing about which digits the text names
    choice_bank = {(lang, k): [x for i, x in enumerate(clips) if (VOICES[lang][i // (len(SPEEDS) * len(PITCHES))][-2]
                                                                   == ("m" if lang == "en" else "f"))
                               and PITCHES[i % len(PITCHES)] == (PITCHES[0] if lang == "en" else PITCHES[-1])]
                   for (lang, k), clips in bank.items()}
    for split, n in sizes.items():
        folder = out / split
        folder.mkdir(exist_ok=True)
        rows = []
        for i in range(n):
            if kind == "redundant":
                k = int(rng.integers(10))
                row = {"label": k}
                for lang in ("en", "de"):
                    clips = bank[(lang, k)]
                    write_wav(folder / f"{i:05d}_{lang}.wav", noisy(clips[int(rng.integers(len(clips)))], rng))
                    row[f"speech_{lang}"] = f"{split}/{i:05d}_{lang}.wav"
                    row[f"caption_{lang}"] = caption(lang, k, rng)
            elif kind == "joint-features":
                word = int(rng.integers(10))
                lang = "en" if rng.random() < 0.5 else "de"
                k = word if lang == "en" else (word + SHIFT) % 10
                clips = choice_bank[(lang, int(rng.integers(10)))]
                pool_w = scans[split][word]
                row = {"label": k, "voice": voice_features(noisy(clips[int(rng.integers(len(clips)))], rng)),
                       "scan": [float(v) for v in pool_w[int(rng.integers(len(pool_w)))].ravel()]}
            else:
                word = int(rng.integers(10))
                lang = "en" if rng.random() < 0.5 else "de"
                k = word if lang == "en" else (word + SHIFT) % 10
                spoken = int(rng.integers(10))  # what is said does not matter, only the language it is said in
                clips = choice_bank[(lang, spoken)]
                write_wav(folder / f"{i:05d}.wav", noisy(clips[int(rng.integers(len(clips)))], rng))
                row = {"label": k, "speech": f"{split}/{i:05d}.wav",
                       "text": f"{rng.choice(LEADS)} {WORDS['en'][word] if rng.random() < 0.8 else word}"}
            pool = scans[split][k]
            scan = pool[int(rng.integers(len(pool)))]
            if kind == "joint-features":
                row = {"id": f"{split}-{i:05d}", "image": [float(v) for v in scan.ravel()], **row}
            else:
                write_png(folder / f"{i:05d}.png", scan)
                row = {"id": f"{split}-{i:05d}", "image": f"{split}/{i:05d}.png", **row}
            rows.append(row)
        with open(out / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=list(SIZES))
    parser.add_argument("out", type=Path, help="folder for the files and train/val/test.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                        help="tuples per split (default: redundant 800 100 300, joint 1000 200 300)")
    args = parser.parse_args()
    start = time.perf_counter()
    sizes = dict(zip(SPLITS, args.sizes)) if args.sizes else SIZES[args.kind]
    write(args.kind, args.out, args.seed, sizes)
    print(f"wrote {args.out} ({', '.join(f'{s} {n}' for s, n in sizes.items())} tuples) "
          f"in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
