"""Dataset ``manifest``: JSONL/CSV rows of files and inline values, holes, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from PIL import Image

import polyalign
from polyalign.cli import main
from polyalign.commands.data_check import check_data
from polyalign.core.assemble import assemble
from polyalign.core.data import DataError
from polyalign.core.errors import PolyalignError
from polyalign.core.plugin_manager import make_plugins
from polyalign.core.recipe import validate_recipe
from polyalign.plugins.datasets.manifest import ManifestError
from polyalign.testing import check_dataset

COLUMNS = ["id", "label", "image", "audio", "ecg", "text", "lab"]
ENCODERS = {"image": {"plugin": "image", "model": "test_resnet", "image_size": 16},
            "audio": {"plugin": "audio", "sample_rate": 8000, "clip_seconds": 0.25, "n_mels": 16, "n_fft": 128,
                      "channels": [4]},
            "ecg": {"plugin": "ecg", "leads": 12, "length": 100, "base_width": 4, "blocks": [1, 1]},
            "text": {"plugin": "byte_text", "dim": 16, "layers": 1, "heads": 2, "max_length": 32},
            "lab": {"plugin": "tabular", "hidden": [8]}}




def _write_files(folder, n: int) -> list[dict]:
    """Real files for ``n`` tuples; every third row lacks a different modality."""
    rng = np.random.default_rng(0)
    for sub in ("img", "wav", "ecg"):
        (folder / sub).mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / "img" / f"{i}.png")
        sf.write(folder / "wav" / f"{i}.wav", rng.normal(0, 0.1, 3000).astype(np.float32), 8000)
        np.save(folder / "ecg" / f"{i}.npy", rng.normal(size=(12, 120)).astype(np.float32))
        row = {"id": f"r{i}", "label": i % 2, "image": f"img/{i}.png", "audio": f"wav/{i}.wav",
               "ecg": f"ecg/{i}.npy", "text": f"tuple number {i}", "lab": [float(i), None, 1.5]}
        hole = ["image", "text", "ecg", "audio"][(i // 3) % 4] if i % 3 == 0 else None
        rows.append({k: v for k, v in row.items() if k != hole})
    return rows


def _write_jsonl(path, rows, null_for=None):
    """JSON Lines; a hole is an absent key, or ``null`` for the modality ``null_for``."""
    lines = []
    for row in rows:
        if null_for and null_for not in row:
            row = {**row, null_for: None}
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n\n")  # a trailing blank line is fine


def _write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in row.items()})


@pytest.fixture
def folder(tmp_path):
    rows = _write_files(tmp_path, 12)
    _write_jsonl(tmp_path / "train.jsonl", rows[:8], null_for="text")
    _write_jsonl(tmp_path / "val.jsonl", rows[8:10])
    _write_jsonl(tmp_path / "test.jsonl", rows[10:])
    return tmp_path


def test_a_cell_is_a_file_when_that_file_exists(tmp_path):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("a red circle", encoding="utf-8")
    (tmp_path / "rec.hea").write_text("rec 1 100 10\n")
    rows = [{"text": "text/a.txt", "ecg": "rec"}, {"text": "gone.txt", "ecg": "img/7.png"},
            {"text": f"{tmp_path}/text/a.txt", "ecg": "a red circle"}, {"text": "a caption.txt", "ecg": "rec"}]
    _write_jsonl(tmp_path / "train.jsonl", rows)
    data = polyalign.build("dataset", "manifest", path=str(tmp_path))
    assert data.split("train") == [{"text": Path("text/a.txt"), "ecg": Path("rec")},  # a WFDB record by its .hea
                                   # no such file, but one word ending as a file does: a (missing) file, not text
                                   {"text": Path("gone.txt"), "ecg": Path("img/7.png")},
                                   {"text": tmp_path / "text" / "a.txt", "ecg": "a red circle"},
                                   {"text": "a caption.txt", "ecg": Path("rec")}]  # several words: text
    byte_text = polyalign.build("encoder", "byte_text", dim=16, layers=1, heads=2, max_length=64)
    first, last = (byte_text.load(s["text"], data.root)["input_ids"] for s in data.split("train")[::3])
    assert bytes((first[1:] - 2).tolist()) == b"a red circle" and bytes((last[1:] - 2).tolist()) == b"a caption.txt"
    with pytest.raises(PolyalignError, match=r"gone\.txt"):  # said missing, never read as the text of its name
        byte_text.load(data.split("train")[1]["text"], data.root)
    with pytest.raises(PolyalignError, match=r"image file not found: .*img/7\.png"):
        polyalign.build("encoder", "image", model="test_resnet", image_size=16).load(Path("img/7.png"), data.root)


def _recipe(tmp_path, data: dict, modalities=tuple(ENCODERS), **train):
    raw = {"name": "manifest-test", "data": data,
           "modalities": {m: {"encoder": ENCODERS[m]} for m in modalities},
           "model": {"embed_dim": 8}, "loss": {"plugin": "clip"},
           "train": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "log_every": 1, **train},
           "eval": [{"plugin": "zero_shot", "target": modalities[0], "match": "label"}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return polyalign.load_recipe(path)


def test_jsonl_and_csv_give_the_same_samples(folder, tmp_path):
    rows = _write_files(folder, 12)
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    _write_csv(csv_dir / "train.csv", rows[:8])
    jsonl = polyalign.build("dataset", "manifest", path=str(folder))
    table = polyalign.build("dataset", "manifest", path=str(csv_dir), root=str(folder))
    assert jsonl.modalities == ("audio", "ecg", "text", "lab", "image")  # first-seen order
    assert set(table.modalities) == set(jsonl.modalities)
    assert table.split("train") == jsonl.split("train")
    assert jsonl.split("train")[0] == {"id": "r0", "label": 0, "audio": Path("wav/0.wav"), "ecg": Path("ecg/0.npy"),
                                       "text": "tuple number 0", "lab": [0.0, None, 1.5]}  # image hole
    assert "text" not in jsonl.split("train")[3]  # null = missing
    assert table.split("val") == [] and len(jsonl.split("test")) == 2
    assert jsonl.root == folder.resolve()
    assert jsonl.locate("train", 2) == f"manifest {folder / 'train.jsonl'}, line 3"


def test_every_modality_loads_and_holes_become_absent(folder, tmp_path):
    parts = assemble(_recipe(tmp_path, {"plugin": "manifest", "path": str(folder)}))
    data = parts.tuples("train")
    batch = parts.collator()([data[i] for i in range(len(data))])
    expected_holes = {0: "image", 3: "text", 6: "ecg"}
    for m in ENCODERS:
        assert batch.present[m].tolist() == [expected_holes.get(i) != m for i in range(8)], m
    assert batch.label.tolist() == [i % 2 for i in range(8)]
    out = parts.model(batch.inputs, batch.present)
    assert all(out[m].shape == (8, 8) for m in ENCODERS)
    assert float(out["image"][0].abs().sum()) == 0.0 and float(out["image"][1].norm()) == pytest.approx(1.0)


def _break(folder, kind: str) -> tuple[str, str]:
    """Damage row 1's file of one kind; the modality and the file name the error must give."""
    if kind == "missing file":
        (folder / "img" / "1.png").unlink()
        return "image", "img/1.png"
    if kind == "corrupt image":
        (folder / "img" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
        return "image", "1.png"
    if kind == "wrong ECG shape":
        np.save(folder / "ecg" / "1.npy", np.zeros((8, 120), np.float32))
        return "ecg", "1.npy"
    (folder / "wav" / "1.wav").write_bytes(b"RIFF----WAVEfmt not really")
    return "audio", "1.wav"


@pytest.mark.parametrize("kind", ["missing file", "corrupt image", "wrong ECG shape", "corrupt audio"])
def test_bad_input_names_manifest_row_and_file(folder, tmp_path, kind):
    modality, file = _break(folder, kind)
    parts = assemble(_recipe(tmp_path, {"plugin": "manifest", "path": str(folder)}))
    data = parts.tuples("train")
    with pytest.raises(DataError) as info:
        data[1]
    message = str(info.value)
    assert f"manifest {folder / 'train.jsonl'}, line 2 (split 'train', row 1)" in message
    assert f"modality {modality!r}" in message and file in message


@pytest.mark.slow
def test_skip_leaves_bad_rows_out_and_reports_them(folder, tmp_path, capsys):
    _break(folder, "corrupt image")
    recipe = _recipe(tmp_path, {"plugin": "manifest", "path": str(folder), "on_error": "skip"},
                     modalities=("image", "text"), num_workers=1)
    run = polyalign.train(recipe, out=tmp_path / "runs")
    epochs = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
    assert [r.get("skipped_train") for r in epochs] == [1.0, 1.0]  # counted in a DataLoader worker
    printed = capsys.readouterr()
    assert "skipped 1 row(s) of split 'train'" in printed.out + printed.err
    assert "1.png" in printed.out + printed.err
    parts = assemble(recipe)
    data = parts.tuples("train")
    assert data[1] == (1, {}, 1)  # the row is there, every modality absent
    assert len(data.take_skipped()) == 1 and data.take_skipped() == []
    with pytest.raises(DataError, match=r"1\.png"):
        polyalign.train(_recipe(tmp_path, {"plugin": "manifest", "path": str(folder)}, modalities=("image", "text")),
                        out=tmp_path / "runs2")


def test_manifest_file_errors(tmp_path):
    with pytest.raises(ManifestError, match="no train.jsonl or train.csv"):
        polyalign.build("dataset", "manifest", path=str(tmp_path))
    (tmp_path / "train.jsonl").write_text('{"a": "x.png"}\n{"a": broken\n')
    with pytest.raises(ManifestError, match=r"train\.jsonl, line 2: not valid JSON"):
        polyalign.build("dataset", "manifest", path=str(tmp_path))
    (tmp_path / "train.jsonl").write_text('{"a": "x"}\n["a", "b"]\n')
    with pytest.raises(ManifestError, match=r"line 2: expected a JSON object"):
        polyalign.build("dataset", "manifest", path=str(tmp_path))
    (tmp_path / "train.jsonl").unlink()
    (tmp_path / "train.csv").write_text('a,b\nhello,"[1, 2"\n')
    cell = r"train\.csv, line 2, column 'b': not valid JSON .*a cell starting with '\['"
    with pytest.raises(ManifestError, match=cell):
        polyalign.build("dataset", "manifest", path=str(tmp_path))
    (tmp_path / "train.csv").write_text("a,b\nhello,world\n")
    with pytest.raises(ManifestError, match=r"data\.modalities: 'c' never appear"):
        polyalign.build("dataset", "manifest", path=str(tmp_path), modalities=["a", "c"])
    (tmp_path / "train.jsonl").write_text('{"a": "x"}\n')
    with pytest.raises(ManifestError, match="holds both"):
        polyalign.build("dataset", "manifest", path=str(tmp_path))


@pytest.mark.slow
def test_check_data_builds_every_plugin_checks_every_file_and_embeds_a_sample(folder, tmp_path, capsys):
    recipe = _recipe(tmp_path, {"plugin": "manifest", "path": str(folder)})
    lines = check_data(recipe)
    assert lines[:2] == ["dataset manifest: train 8 rows, val 2 rows, test 2 rows",
                         "encoders: audio (audio, width 4), ecg (ecg, width 8), image (image, width 96), "
                         "lab (tabular, width 8), text (byte_text, width 16)"]
    assert lines[2:4] == ["loss: clip", "evaluators: zero_shot"]
    assert lines[4] == "train: every row's files checked (22 file reference(s) in 8 rows, 0 broken)"
    assert lines[5].startswith("train: rows 0, 1, 2, 3, 4, 5, 7 loaded, collated and embedded (audio 7/7, ecg 7/7, "
                               "image 6/7, lab 7/7, text 6/7 present); loss ")
    assert lines[6].startswith("train: one whole step (encoders and loss, forward and backward) on these 7 rows: ")
    assert lines[7::2] == [f"{split}: every row's files checked ({k + 4} file reference(s) in 2 rows, 0 broken)"
                           for split, k in (("val", 1), ("test", 2))]
    assert lines[8::2] == [f"{split}: rows 0-1 loaded, collated and embedded (audio {k}/2, ecg 2/2, image 2/2, "
                           f"lab 2/2, text 2/2 present)" for split, k in (("val", 1), ("test", 2))]  # val row 1: no audio
    assert main(["validate", str(tmp_path / "recipe.yaml"), "--check-data"]) == 0
    assert "  train: rows 0, 1, 2, 3, 4, 5, 7 loaded, collated and embedded (audio 7/7" in capsys.readouterr().out


def test_check_data_reports_every_unreadable_row_and_plugin_that_fails(folder, tmp_path, capsys):
    (folder / "img" / "9.png").unlink()  # val row 1
    np.save(folder / "ecg" / "11.npy", np.zeros((8, 120), np.float32))  # test row 1: 8 leads, not 12

    class Unbuildable:
        @polyalign.hookimpl
        def register_evaluators(self, register):
            class NoLabelMap:
                name = "unbuildable"

                def __init__(self):
                    raise OSError("label map not found")

            register(NoLabelMap)

    _recipe(tmp_path, {"plugin": "manifest", "path": str(folder)})
    raw = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    raw["eval"].append({"plugin": "unbuildable"})
    plugins = make_plugins(extra=[Unbuildable()])
    with pytest.raises(PolyalignError) as info:
        check_data(validate_recipe(raw, plugins=plugins), plugins)
    message = str(info.value)
    assert message.startswith("3 problem(s) with the data or the plugins:\n")
    assert "eval.1 (unbuildable): the evaluator failed to build: OSError: label map not found" in message
    assert f"manifest {folder / 'val.jsonl'}, line 2 (split 'val', row 1), modality 'image'" in message
    assert f"manifest {folder / 'test.jsonl'}, line 2 (split 'test', row 1), modality 'ecg'" in message
    raw["eval"].pop()
    raw["data"]["on_error"] = "skip"
    lines = check_data(validate_recipe(raw))
    assert lines[-4] == (f"val: every row's files checked (5 file reference(s) in 2 rows, 1 broken); 1 row(s) would "
                         f"be skipped (data.on_error: skip): manifest {folder / 'val.jsonl'}, line 2 (split 'val', "
                         f"row 1), modality 'image': {folder / 'img' / '9.png'} not found")
    assert lines[-3].startswith("val: rows 0-1 loaded, collated and embedded (audio 1/2, ecg 1/2, image 1/2, "
                                "lab 1/2, text 1/2 present); 1 row(s) would be skipped (data.on_error: skip): ")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({**raw, "data": {"plugin": "manifest", "path": str(folder)}}))
    assert main(["validate", str(tmp_path / "recipe.yaml"), "--check-data"]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s) with the data or the plugins" in err and "Traceback" not in err


def test_the_manifest_dataset_keeps_the_dataset_contract(folder):
    check_dataset("manifest", path=str(folder))


def test_label_names_name_the_integer_labels_and_must_cover_them(folder):
    dataset = make_plugins().build("dataset", "manifest", path=str(folder), label_names=["even", "odd"])
    assert dataset.label_names == ["even", "odd"] and {s["label"] for s in dataset.split("train")} == {0, 1}
    check_dataset("manifest", path=str(folder), label_names=["even", "odd"])
    with pytest.raises(ManifestError, match=r"train.jsonl, line 2: label 1 names no class of data.label_names "
                                            r"\(1 names"):
        make_plugins().build("dataset", "manifest", path=str(folder), label_names=["even"])
