"""scripts/make_spoken_digits.py: the two real-file sets (redundant, joint) are written as
manifests the recipes read, reproducibly, with the joint rule holding in every tuple."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from conftest import RECIPES

import polyalign

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_spoken_digits.py"
SIZES = {"train": 12, "val": 4, "test": 6}


@pytest.fixture(scope="module")
def make():
    spec = importlib.util.spec_from_file_location("make_spoken_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def rows(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def test_the_redundant_set_names_one_digit_in_every_modality_and_is_reproducible(make, tmp_path):
    out = make.write("redundant", tmp_path / "a", seed=3, sizes=SIZES)
    assert digest(out) == digest(make.write("redundant", tmp_path / "b", seed=3, sizes=SIZES))
    for split, n in SIZES.items():
        got = rows(out, split)
        assert len(got) == n
        for r in got:
            k = r["label"]
            assert make.WORDS["en"][k] in r["caption_en"] or str(k) in r["caption_en"]
            assert make.WORDS["de"][k] in r["caption_de"] or str(k) in r["caption_de"]
            assert all((out / r[m]).stat().st_size > 100 for m in ("image", "speech_en", "speech_de"))
    for recipe in ("spoken-digits.yaml", "spoken-digits-5.yaml"):
        loaded = polyalign.load_recipe(RECIPES / recipe, [f"data.path={out}"])
        assert set(loaded.modalities) <= set(rows(out, "train")[0])


def test_the_joint_set_fixes_the_image_by_speech_and_text_together(make, tmp_path):
    out = make.write("joint", tmp_path / "j", seed=0, sizes=SIZES)
    for split in SIZES:
        for r in rows(out, split):
            word = r["text"].split()[1]
            w = int(word) if word.isdigit() else make.WORDS["en"].index(word)
            assert r["label"] in (w, (w + make.SHIFT) % 10)
    # the rule: English speech -> the first word's digit; the audio files say which language (by voice)
    assert len({r["label"] for r in rows(out, "train")}) > 3
    scans = make.scans_by_split(0)
    assert not ({x.tobytes() for k in range(10) for x in scans["train"][k]}
                & {x.tobytes() for k in range(10) for x in scans["test"][k]})


def test_the_joint_feature_set_holds_the_same_rule_on_measured_features(make, tmp_path):
    out = make.write("joint-features", tmp_path / "f", seed=0, sizes=SIZES)
    got = rows(out, "train")
    assert all(len(r["image"]) == 64 and len(r["scan"]) == 64 and len(r["voice"]) == 40 for r in got)
    assert polyalign.load_recipe(RECIPES / "digit-choice.yaml", [f"data.path={out}"]).modalities.keys() == {
        "image", "voice", "scan"}
    # the two voices differ in what the features measure: English (low, male) against German (high, female)
    import numpy as np

    en = make.voice_features(make.noisy(make.speak("seven", "en+m1", 150, 35), np.random.default_rng(0)))
    de = make.voice_features(make.noisy(make.speak("sieben", "de+f2", 150, 65), np.random.default_rng(0)))
    assert len(en) == len(de) == 40 and en != de
