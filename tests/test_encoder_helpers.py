"""The helpers encoder plugins share: a value naming a file, and padding to a batch with a mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polyalign.core.encoder import Encoder, pad_with_mask, resolve_file
from polyalign.core.errors import PolyalignError


def test_pad_with_mask_pads_the_first_dimension_and_marks_real_entries():
    values = [torch.ones(3, 2), torch.full((1, 2), 2.0), torch.zeros(0, 2)]
    padded, mask = pad_with_mask(values, pad_value=-1.0)
    assert padded.shape == (3, 3, 2) and mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert torch.equal(padded[1], torch.tensor([[2.0, 2.0], [-1.0, -1.0], [-1.0, -1.0]]))
    ids, id_mask = pad_with_mask([torch.tensor([5, 6]), torch.tensor([7])])
    assert ids.dtype == torch.int64 and ids.tolist() == [[5, 6], [7, 0]]
    assert id_mask.tolist() == [[True, True], [True, False]]
    with pytest.raises(PolyalignError, match=r"the other dimensions must agree, got shapes \(3, 2\), \(1, 3\)"):
        pad_with_mask([torch.ones(3, 2), torch.ones(1, 3)])
    with pytest.raises(PolyalignError, match="at least one tensor"):
        pad_with_mask([])


def test_resolve_file_against_the_root_with_a_clear_not_found(tmp_path):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "a.csv").write_text("x\n1\n")
    assert resolve_file(Path("rec/a.csv"), tmp_path, "IMU recording") == tmp_path / "rec" / "a.csv"
    assert resolve_file(tmp_path / "rec" / "a.csv", None, "IMU recording") == tmp_path / "rec" / "a.csv"
    with pytest.raises(PolyalignError, match=rf"^IMU recording file not found: {tmp_path}/rec/b.csv \(relative paths "
                                             rf"resolve against {tmp_path}\)$"):
        resolve_file(Path("rec/b.csv"), tmp_path, "IMU recording")
    with pytest.raises(PolyalignError, match=r"expected IMU recording file \(a pathlib.Path\), got list \[1, 2\]"):
        resolve_file([1, 2], tmp_path, "IMU recording")
    with pytest.raises(PolyalignError, match=r"^expected IMU recording file, got the text 'rec/a.csv': a str is text, "
                                             r"never a path"):
        resolve_file("rec/a.csv", tmp_path, "IMU recording")  # even where that file exists


def test_an_encoder_overriding_the_derived_load_is_refused_where_it_is_defined():
    with pytest.raises(PolyalignError, match=r"encoder .*OldStyle overrides load\(value, root\), which is "
                                             r"finish\(decode\(value, root\), training\) for every encoder"):
        class OldStyle(Encoder):
            def load(self, value, root):
                return torch.tensor(value)
