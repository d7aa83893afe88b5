"""`polyalign sweep`: a search checks its metric and its storage before any trial trains, a search with no
completed trial is a failure, and a grid too large for one sweep is refused before it is expanded."""

from __future__ import annotations

import time

import pytest
from conftest import RECIPES

from polyalign.cli import main

pytest.importorskip("optuna")
SMALL = ["train.epochs=1", "data.n_train=256", "data.n_val=64", "data.n_test=64"]


def search(tmp_path, *extra: str) -> list[str]:
    return ["sweep", str(RECIPES / "xor-symile.yaml"), *SMALL, "--search", "optuna", "--trials", "2",
            "--grid", "train.lr=0.01..0.1", "--out", str(tmp_path / "search"), *extra]


def trials_started(tmp_path) -> list[str]:
    runs = tmp_path / "search" / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def test_a_wrong_metric_is_refused_before_any_trial_with_the_rows_there_are(tmp_path, capsys):
    assert main(search(tmp_path, "--metric", "zero_shot/b_from_a+c/acuracy")) == 2
    err = capsys.readouterr().err
    assert "--metric 'zero_shot/b_from_a+c/acuracy' is not a row of the recipe's evaluators" in err
    assert "zero_shot/b_from_a+c/accuracy" in err and "Traceback" not in err
    assert trials_started(tmp_path) == []


@pytest.mark.parametrize("storage, said", [
    ("sqlite:///:memory:", "an in-memory database lives and dies with one process"),
    ("sqlite://", "an in-memory database"),
    ("sqlite:///{tmp}/no/such/folder/study.db", "cannot be opened and written"),
    ("sqlite:///{tmp}/garbage.db", "cannot be opened and written (file is not a database"),
    ("postgresql://user@localhost/db", "cannot be opened and written"),
    ("not a url", "cannot be opened and written"),
    ("file:///etc/passwd", "cannot be opened and written"),
])
def test_a_storage_that_cannot_be_opened_is_refused_before_any_trial(storage, said, tmp_path, capsys):
    (tmp_path / "garbage.db").write_bytes(b"this is not sqlite\n" * 100)
    argv = search(tmp_path, "--metric", "zero_shot/b_from_a+c/accuracy", "--storage", storage.format(tmp=tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and "unexpected" not in err and "Traceback" not in err
    assert trials_started(tmp_path) == []


def test_a_search_where_no_trial_completed_fails_without_optuna_tracebacks(tmp_path, capfd):
    argv = search(tmp_path, "--metric", "zero_shot/b_from_a+c/accuracy")
    argv[argv.index("train.lr=0.01..0.1")] = "train.batch_size=0,-1"  # every trial's recipe is invalid
    assert main(argv) == 2
    captured = capfd.readouterr()
    assert "no trial of the search completed" in captured.err and "train.batch_size" in captured.out
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize("extra, said", [
    (["--grid", "train.lr=" + ",".join(f"0.{i:04d}1" for i in range(101)),
      "--grid", "train.batch_size=" + ",".join(str(i) for i in range(1, 101))],
     "the sweep would hold 10,100 runs (101 values of train.lr x 100 values of train.batch_size x 1 seed(s))"),
    (["--seeds", "1000000000"], "the sweep would hold 1,000,000,000 runs (1,000,000,000 seed(s))"),
])
def test_a_grid_too_large_is_refused_at_once_with_its_size(extra, said, tmp_path, capsys):
    started = time.monotonic()
    assert main(["sweep", str(RECIPES / "xor-symile.yaml"), "--out", str(tmp_path / "big"), *extra]) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert said in err and "at most 10,000" in err and not (tmp_path / "big").exists()
