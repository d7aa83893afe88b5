"""Every CLI command over a corpus of hostile inputs (tests/hostile_corpus.py): it exits 0 or 2,
never prints a traceback, and never prints more than 20 kB."""

from __future__ import annotations

import pytest
from hostile_corpus import CASES, make_models

from polyalign.cli import main

MAX_OUTPUT = 20_000


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_gets_one_bounded_message(name, made, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POLYALIGN_DEBUG", raising=False)
    argv = CASES[name](tmp_path, made)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a usage error
        code = exc.code
    out, err = capsys.readouterr()
    printed = out + err
    assert code in (0, 2), printed[-3000:]
    assert "Traceback" not in printed and "unexpected" not in err, printed[-3000:]
    assert len(printed.encode("utf-8")) <= MAX_OUTPUT, f"{len(printed.encode())} bytes: {printed[:500]}..."
    if code == 2:
        assert "error:" in err
