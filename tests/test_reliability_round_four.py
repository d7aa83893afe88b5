"""Round four of the hostile inputs (issue 31): what a folder handed to a command, a file in the way and a
manifest entry that is not a regular file can do."""

from __future__ import annotations

import pytest
from conftest import RECIPES

from polyalign.cli import main


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_out_under_a_file_says_what_is_in_the_way(command, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    for out, said in [(tmp_path / "taken", "something of that name is there already"),
                      (tmp_path / "taken" / "runs", "a part of the path is a file, not a folder")]:
        assert main([command, str(RECIPES / "xor-symile.yaml"), "train.epochs=1", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert said in err and str(tmp_path / "taken") in err and "Traceback" not in err
    assert (tmp_path / "taken").read_text() == "a file, not a folder"
