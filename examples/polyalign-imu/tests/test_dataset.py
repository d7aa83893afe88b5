"""Tests of the tuple_folders dataset on a small tree of real files."""

from pathlib import Path

import pytest

import polyalign
from polyalign.plugin import PolyalignError, check_dataset


def write_tuple(folder, **files):
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_one_folder_per_tuple_and_missing_files_are_missing_modalities(tmp_path):
    write_tuple(tmp_path / "train" / "t1", **{"imu.csv": "x,y,z\n0,0,1\n", "caption.txt": "sitting", "label.txt": "0"})
    write_tuple(tmp_path / "train" / "t2", **{"imu.csv": "x,y,z\n0,1,0\n"})
    write_tuple(tmp_path / "test" / "t3", **{"caption.txt": "running"})
    data = polyalign.build("dataset", "tuple_folders", path=str(tmp_path))
    assert data.modalities == ["caption", "imu"] and data.root == tmp_path.resolve()
    assert data.split("train") == [{"id": "t1", "caption": Path("train/t1/caption.txt"),
                                    "imu": Path("train/t1/imu.csv"), "label": 0},
                                   {"id": "t2", "imu": Path("train/t2/imu.csv")}]
    assert data.split("val") == [] and data.split("test") == [{"id": "t3", "caption": Path("test/t3/caption.txt")}]
    assert data.locate("test", 0) == f"tuple folder {tmp_path.resolve() / 'test' / 't3'}"
    assert polyalign.build("dataset", "tuple_folders", path=str(tmp_path), modalities=["imu", "caption"]).modalities \
        == ["imu", "caption"]


def test_bad_trees_say_what_to_fix(tmp_path):
    with pytest.raises(PolyalignError, match="has no train/ folder"):
        polyalign.build("dataset", "tuple_folders", path=str(tmp_path))
    write_tuple(tmp_path / "train" / "t1", **{"imu.csv": "x\n", "label.txt": "walking"})
    with pytest.raises(PolyalignError, match=r"label\.txt: a label must be an integer"):
        polyalign.build("dataset", "tuple_folders", path=str(tmp_path))
    (tmp_path / "train" / "t1" / "label.txt").write_text("1")
    with pytest.raises(PolyalignError, match="no file in .* is named audio; the modalities found are: imu"):
        polyalign.build("dataset", "tuple_folders", path=str(tmp_path), modalities=["imu", "audio"])


def test_tuple_folders_keeps_the_dataset_contract(tmp_path):
    write_tuple(tmp_path / "train" / "t1", **{"imu.csv": "x,y,z\n0,0,1\n", "caption.txt": "sitting", "label.txt": "0"})
    write_tuple(tmp_path / "train" / "t2", **{"imu.csv": "x,y,z\n0,1,0\n", "label.txt": "1"})
    write_tuple(tmp_path / "test" / "t3", **{"caption.txt": "running"})
    # splits, rows, the modalities promised against those the rows provide, labels, ids, determinism
    check_dataset("tuple_folders", path=str(tmp_path))
