"""``validate --check-data``: every row's file references are checked (a stat, not a decode), each broken
one named by file and row (the first 20, then a count), and a sample spread over each split is decoded; a
whole training step is timed on the train sample."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from polyalign.cli import main
from polyalign.commands.data_check import sample_rows
from polyalign.commands.file_references import broken_references

ROWS = 200


def _manifest(folder: Path) -> Path:
    """A recipe over a train manifest of ROWS rows, each naming two .npy files (all present)."""
    data = folder / "data"
    (data / "a").mkdir(parents=True)
    (data / "b").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(ROWS):
        for m in "ab":
            np.save(data / m / f"{i}.npy", rng.normal(size=3).astype(np.float32))
        lines.append(json.dumps({"a": f"a/{i}.npy", "b": f"b/{i}.npy", "label": i % 2}))
    (data / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "files", "data": {"plugin": "manifest", "path": str(data)},
        "modalities": {"a": {"encoder": {"plugin": "vector"}}, "b": {"encoder": {"plugin": "vector"}}},
        "model": {"embed_dim": 4}, "loss": {"plugin": "clip"}, "train": {"epochs": 1, "batch_size": 16},
        "eval": []}), encoding="utf-8")
    return recipe


def test_a_missing_file_on_any_row_is_named_with_its_manifest_line(tmp_path, capsys):
    recipe = _manifest(tmp_path)
    data = tmp_path / "data"
    (data / "b" / "150.npy").unlink()  # far past the rows that are decoded
    (data / "a" / "77.npy").unlink()
    (data / "a" / "77.npy").mkdir()
    assert main(["validate", str(recipe), "--check-data"]) == 2
    err = capsys.readouterr().err
    assert "train: 2 of 400 file reference(s) cannot be read:" in err
    assert f"manifest {data / 'train.jsonl'}, line 78 (split 'train', row 77), modality 'a': " \
           f"{data / 'a' / '77.npy'} is a folder, not a file" in err
    assert f"line 151 (split 'train', row 150), modality 'b': {data / 'b' / '150.npy'} not found" in err


def test_many_broken_rows_are_listed_up_to_twenty_then_counted(tmp_path, capsys):
    recipe = _manifest(tmp_path)
    for i in range(5, 60):
        (tmp_path / "data" / "a" / f"{i}.npy").unlink()
    assert main(["validate", str(recipe), "--check-data"]) == 2
    err = capsys.readouterr().err
    assert "train: 55 of 400 file reference(s) cannot be read:" in err
    assert err.count("not found") == 20 and "... and 35 more" in err
    assert "row 24)" in err and "row 25)" not in err  # the first twenty, in row order


def test_a_sound_manifest_says_what_was_checked_and_times_a_whole_step(tmp_path, capsys):
    assert main(["validate", str(_manifest(tmp_path)), "--check-data"]) == 0
    out = capsys.readouterr().out
    assert "train: every row's files checked (400 file reference(s) in 200 rows, 0 broken)" in out
    assert "train: rows 0, 1, 2, 3, 50, 100, 149, 199 loaded, collated and embedded (a 8/8, b 8/8 present)" in out
    assert "train: one whole step (encoders and loss, forward and backward) on these 8 rows: " in out
    assert "at train.batch_size 16, about " in out
    assert "one step of loss clip alone, encoders not counted" in out


@pytest.mark.parametrize("size, rows, expected", [
    (1, 4, [0]), (4, 4, [0, 1, 2, 3]), (6, 4, [0, 1, 2, 3, 4, 5]), (100, 4, [0, 1, 2, 3, 25, 50, 74, 99])])
def test_the_decoded_sample_takes_the_first_rows_and_spreads_to_the_last(size, rows, expected):
    assert sample_rows(size, rows) == expected


def test_a_missing_file_read_as_text_is_caught_by_its_column(tmp_path):
    (tmp_path / "imu").mkdir()
    (tmp_path / "imu" / "0.csv").write_text("1,2,3\n")
    samples = [{"imu": Path("imu/0.csv"), "caption": "a walk.csv"},  # inline text with spaces: text
               {"imu": "imu/1.csv", "caption": "run"},  # a one-word .csv cell where the column holds .csv files
               {"imu": "imu/2.npy"}]  # another ending: text as far as this column goes
    count, broken = broken_references(samples, tmp_path, lambda i: f"row {i}")
    why = (f"row 1, modality 'imu': {tmp_path / 'imu' / '1.csv'} not found (so the cell would be read as text, "
           f"while the column's other rows name .csv files)")
    assert count == 2 and broken == [(1, why)]


def _seconds(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"ms": 1e-3, "s": 1.0, "min": 60.0}[unit]


def test_the_timed_step_counts_every_micro_batch_of_an_optimizer_step(tmp_path, capsys):
    assert main(["validate", str(_manifest(tmp_path)), "train.accumulate=4", "--check-data"]) == 0
    found = re.search(r"on these 8 rows: ([\d.]+ m?s) on cpu; at train\.batch_size 16 x train\.accumulate 4, "
                      r"about ([\d.]+ (?:ms|s|min)) a step", capsys.readouterr().out)
    assert found is not None
    ratio = _seconds(found[2]) / _seconds(found[1])  # 64 rows an optimizer step, for 8 timed (2 digits shown)
    assert 8 * 0.9 < ratio < 8 * 1.1
