"""``sweep --status``: the time left is estimated per configuration (from its own finished runs, else from
the most similar configurations', and the status says which), and a trained run whose evaluation is not
written yet shows as evaluating, not as 100% trained."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import RECIPES

from polyalign.cli import main
from polyalign.sweep.plan import merge_plan, new_plan, slot_dir
from polyalign.sweep.progress import run_seconds, sweep_progress
from polyalign.sweep.worker import slot_lock

GRID = {"loss.plugin": ["symile", "clip"], "train.lr": ["0.01", "0.1"]}


def _run(slot: Path, epochs_done: int, seconds: float | None = None) -> None:
    """A run directory of 2 epochs in ``slot`` with ``epochs_done`` logged; with ``seconds``, finished in that time."""
    run = slot / "run"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("train:\n  epochs: 2\n", encoding="utf-8")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"kind": "epoch", "epoch": e, "step": e}) + "\n"
                                               for e in range(1, epochs_done + 1)), encoding="utf-8")
    if seconds is not None:
        (run / "eval").mkdir()
        (run / "eval" / "report.json").write_text("[]", encoding="utf-8")
        (slot / "status.json").write_text(json.dumps({"state": "done", "seconds": seconds}), encoding="utf-8")


def test_the_time_left_comes_from_each_configuration_and_says_from_what(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    plan = merge_plan(sweep, new_plan(RECIPES / "xor-symile.yaml", [], GRID, [0, 1]))
    slots = {(tuple(spec.overrides), spec.seed): slot_dir(sweep, spec) for spec in plan.runs}
    symile_low, clip_low = ("loss.plugin=symile", "train.lr=0.01"), ("loss.plugin=clip", "train.lr=0.01")
    symile_high = ("loss.plugin=symile", "train.lr=0.1")
    _run(slots[symile_low, 0], 2, seconds=100.0)
    _run(slots[symile_low, 1], 2, seconds=120.0)
    _run(slots[clip_low, 0], 2, seconds=600.0)
    _run(slots[clip_low, 1], 2)  # trained, not evaluated: evaluating
    _run(slots[symile_high, 0], 1)  # half trained
    with slot_lock(slots[clip_low, 1]) as held, slot_lock(slots[symile_high, 0]) as held_too:
        assert held and held_too
        progress = sweep_progress(sweep)
        assert main(["sweep", "--status", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert progress.counts() == {"done": 3, "running": 2, "failed": 0, "interrupted": 0, "pending": 3}
    assert progress.evaluating == {"loss.plugin=clip, train.lr=0.01, seed 1"}
    # symile lr=0.1: 1.5 runs of symile's 110 s; clip lr=0.1: 2 of clip's 600 s; 2 going at once
    assert progress.seconds_left == (1.5 * 110 + 2 * 600) / 2
    assert "8 run(s): 3 done, 2 running (1 of them evaluating), 3 pending; time left: about 11 min 22 s" in out
    assert "  evaluating  loss.plugin=clip, train.lr=0.01, seed 1 (trained; its evaluation report is not written " \
           "yet)" in out
    assert "  running     loss.plugin=symile, train.lr=0.1, seed 0 (50% trained)" in out
    assert "100%" not in out
    assert ("  estimate    loss.plugin=symile, train.lr=0.1: 2 run(s) to train, about 1 min 50 s each, no run of its "
            "own has finished: from 2 run(s) of loss.plugin=symile, train.lr=0.01 (sharing 1 of its 2 grid "
            "value(s))") in out


def test_a_configuration_with_finished_runs_is_estimated_from_them_alone():
    grid = {"a": {"x=1", "y=1"}, "b": {"x=1", "y=2"}, "c": {"x=2", "y=2"}}
    durations = {"a": [10.0, 30.0], "c": [100.0]}
    assert run_seconds("a", durations, grid) == (20.0, "from its 2 finished run(s)")
    seconds, basis = run_seconds("b", durations, grid)  # shares x=1 with a and y=2 with c: both
    assert seconds == 140.0 / 3 and "from 3 run(s) of x=1, y=1; x=2, y=2 (sharing 1 of its 2" in basis
    assert run_seconds("b", {}, grid) is None
