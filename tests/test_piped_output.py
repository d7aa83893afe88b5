"""Training with its output sent to a log or a pipe: each line arrives as it is printed (not when the process
ends), and with no bar there a step line comes now and then."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RECIPES, TINY_XOR

import polyalign
from polyalign.training import loop


@pytest.mark.slow  # a second process: its imports alone take seconds on a busy machine
def test_lines_reach_a_pipe_while_training_goes_on(tmp_path):
    """The parent stops the run (SIGTERM) as soon as the first epoch line reaches it: stopped early, the run
    exits 128 + 15. Had the lines been held until the end, the run would have trained all its epochs and
    exited 0 before the parent read anything."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "polyalign.cli", "train", str(RECIPES / "xor-clip.yaml"), *TINY_XOR,
               "train.epochs=400", "eval=[]", "--out", str(tmp_path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env) as child:
        assert child.stdout is not None
        first = next((line for line in child.stdout if line.startswith("epoch ")), None)
        child.send_signal(signal.SIGTERM)
        child.stdout.read()
        code = child.wait(timeout=120)
    assert first is not None and first.startswith("epoch 1/400 (step 8/3200): train_loss ")
    assert code == 128 + signal.SIGTERM


def test_with_no_terminal_a_step_line_comes_between_epoch_lines(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(loop, "PIPED_EVERY", 0.0)  # a line at every log (train.log_every=2)
    polyalign.train(RECIPES / "xor-clip.yaml", out=tmp_path, overrides=[*TINY_XOR, "train.epochs=1", "eval=[]"])
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split(":")[0] for line in steps] == [f"step {k}/8 (epoch 1/1)" for k in (2, 4, 6, 8)]
    assert all(line.endswith(" samples/s") and ": loss " in line for line in steps)
    assert steps[-1] in lines[:lines.index(next(line for line in lines if line.startswith("epoch 1/1")))]
