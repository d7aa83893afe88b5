"""Every CLI command over a corpus of hostile inputs (tests/hostile_corpus.py, and round three in
tests/hostile_corpus_three.py): it exits 0 or 2, never prints a traceback or "unexpected", never
prints more than 20 kB, says what its case expects (the problem, and the file or option it is about) and answers
within a time bound (a hang fails the case)."""

from __future__ import annotations

import signal

import hostile_corpus_three as three
import pytest
from hostile_corpus import CASES, EXPECTED, make_models

from polyalign.cli import main

MAX_OUTPUT = 20_000
MAX_SECONDS = 120  # a case answers in seconds; this bound only turns a hang into a failure
ALL_CASES = {**CASES, **three.CASES}
ALL_EXPECTED = {**EXPECTED, **three.EXPECTED}


class NoAnswer(BaseException):
    """Raised by the alarm in a case that did not answer in time (not an Exception: nothing catches it)."""


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("models"))


def _on_alarm(signum, frame):
    raise NoAnswer


def test_every_case_says_what_its_output_must_hold():
    assert not set(ALL_CASES) ^ set(ALL_EXPECTED), set(ALL_CASES) ^ set(ALL_EXPECTED)


@pytest.mark.parametrize("name", list(ALL_CASES))
def test_hostile_input_gets_one_bounded_message(name, made, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POLYALIGN_DEBUG", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    argv = ALL_CASES[name](tmp_path, made)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(MAX_SECONDS)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: a usage error
        code = exc.code
    except NoAnswer:
        pytest.fail(f"no answer within {MAX_SECONDS} s: polyalign {' '.join(a[:80] for a in argv)}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out, err = capsys.readouterr()
    printed = out + err
    assert code in (0, 2), printed[-3000:]
    assert "Traceback" not in printed and "unexpected" not in err, printed[-3000:]
    assert len(printed.encode("utf-8")) <= MAX_OUTPUT, f"{len(printed.encode())} bytes: {printed[:500]}..."
    if code == 2:
        assert "error:" in err
    assert ALL_EXPECTED[name] in " ".join(printed.split()), printed[-3000:]
    if name in three.CASES:
        assert not [u for u in three.UNWANTED if u in printed], printed[-3000:]
