"""The embedded demo: real files sharing a class, `polyalign demo-data`, the cached plugin, the recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import RECIPES
from PIL import Image

import polyalign
from polyalign.cli import main
from polyalign.plugins.datasets.demo import AUDIO_RATE, COLOURS, PITCHES_HZ, write_demo
from polyalign.testing import check_dataset

TINY_DEMO = ["data.n_train=48", "data.n_val=16", "data.n_test=16", "data.classes=2",
             "modalities.image.encoder.model=test_resnet", "modalities.image.encoder.image_size=16",
             "modalities.text.encoder.dim=16", "modalities.text.encoder.layers=1", "modalities.text.encoder.heads=2",
             "modalities.audio.encoder.channels=[4,8]", "modalities.ecg.encoder.base_width=4",
             "modalities.ecg.encoder.blocks=[1,1]", "train.epochs=4", "train.batch_size=16", "train.lr=3e-3",
             "train.warmup_steps=0", "train.log_every=1"]




def test_files_show_their_class(tmp_path):
    folder = write_demo(tmp_path / "demo", classes=3, n_train=6, n_val=3, n_test=3, missing_rate=0.0, flip_rate=0.0)
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    assert sorted(r["label"] for r in rows) == [0, 0, 1, 1, 2, 2]
    for row in rows:
        k = row["label"]
        wave, rate = sf.read(folder / row["audio"])
        assert rate == AUDIO_RATE
        peak = np.fft.rfftfreq(len(wave), 1 / rate)[np.abs(np.fft.rfft(wave)).argmax()]
        assert abs(peak - PITCHES_HZ[k]) < 0.05 * PITCHES_HZ[k]
        pixels = np.asarray(Image.open(folder / row["image"]).convert("RGB")).reshape(-1, 3).astype(float)
        colour = np.array(list(COLOURS.values())[k], dtype=float)
        assert (np.abs(pixels - colour).max(axis=1) < 45).sum() >= 20  # the shape is drawn in its colour
        assert np.load(folder / row["ecg"]).shape == (12, 500)
        assert list(COLOURS)[k] in (folder / row["text"]).read_text()


def test_train_split_has_holes_and_eval_splits_are_complete(tmp_path):
    folder = write_demo(tmp_path / "demo", n_train=40, n_val=8, n_test=8, missing_rate=0.3)
    train = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()]
    modalities = ("image", "audio", "ecg", "text")
    assert any(len([m for m in modalities if m in r]) < 4 for r in train)
    assert all(len([m for m in modalities if m in r]) >= 2 for r in train)
    assert all(all(m in r for m in modalities) for r in test)


def test_demo_data_command(tmp_path, capsys):
    assert main(["demo-data", str(tmp_path / "d"), "--n-train", "4", "--n-val", "2", "--n-test", "2"]) == 0
    assert "polyalign train demo-multimodal data.plugin=manifest" in capsys.readouterr().out
    data = polyalign.build("dataset", "manifest", path=str(tmp_path / "d"))
    assert set(data.modalities) == {"image", "audio", "ecg", "text"} and len(data.split("train")) == 4
    assert main(["demo-data", str(tmp_path / "d")]) == 2  # not empty: refused
    assert "not empty" in capsys.readouterr().err


def test_plugin_generates_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYALIGN_CACHE", str(tmp_path / "cache"))
    first = polyalign.build("dataset", "demo", n_train=4, n_val=2, n_test=2)
    (folder,) = (tmp_path / "cache").iterdir()
    stamp = (folder / "train.jsonl").stat().st_mtime_ns
    second = polyalign.build("dataset", "demo", n_train=4, n_val=2, n_test=2)
    assert (folder / "train.jsonl").stat().st_mtime_ns == stamp and first.root == second.root == folder.resolve()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.slow
def test_demo_recipe_trains_and_loss_falls(tmp_path):
    probe = "eval.7"  # the linear probe, on fewer feature sets and values of C than the recipe's
    assert polyalign.load_recipe(RECIPES / "demo-multimodal.yaml").eval[7].plugin == "linear_probe"
    run = polyalign.train(RECIPES / "demo-multimodal.yaml", out=tmp_path / "runs",
                          overrides=TINY_DEMO + [f"data.path={tmp_path / 'data'}", f"{probe}.cs=[0.1,10]",
                                                 f"{probe}.draws=1", f"{probe}.features=[[image],[image,text]]"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert len(epochs) == 4 and epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert {"loss_image-text", "loss_audio-ecg"} <= set(rows[0])
    report = json.loads((run / "eval" / "report.json").read_text())
    accuracy = {(r["target"], "+".join(r["query"])): r["value"] for r in report
                if r["task"] == "zero_shot" and r["metric"] == "accuracy"}
    assert set(accuracy) == {("text", "image"), ("image", "audio"), ("audio", "ecg"), ("ecg", "text"),
                             ("text", "audio+ecg+image")}
    assert all(0.0 <= v <= 1.0 for v in accuracy.values())
    tasks = {r["task"] for r in report}
    assert tasks == {"zero_shot", "retrieval", "zero_shot_classification", "linear_probe"}
    classes = {r["class"] for r in report if r["task"] == "zero_shot_classification" and "class" in r}
    assert classes == {"red circle", "green square"}  # the demo's label names, data.classes=2
    assert {r["shots"] for r in report if r["task"] == "linear_probe"} == {"all", 1, 5}
    markdown = (run / "eval" / "report.md").read_text()
    assert all(task in markdown for task in tasks)


@pytest.mark.parametrize("bad", ["data.classes=9", "data.flip_rate=1.0"])
def test_demo_config_is_validated(bad):
    with pytest.raises(polyalign.core.errors.RecipeError, match="data"):
        polyalign.load_recipe(RECIPES / "demo-multimodal.yaml", [bad])


def test_the_demo_dataset_keeps_the_dataset_contract(tmp_path):
    data = check_dataset("demo", path=str(tmp_path / "demo"), n_train=8, n_val=3, n_test=3)
    assert data.label_names[0] == "red circle"
