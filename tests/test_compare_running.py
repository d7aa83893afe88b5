"""``polyalign compare`` on a run a live process still holds: it says the run is still training (and how far)
or being evaluated, not that it has no evaluation report."""

from __future__ import annotations

import json
from pathlib import Path

from polyalign.cli import main
from polyalign.evaluation.compare import unfinished_run
from polyalign.training.distributed import DistInfo
from polyalign.training.run_lock import hold_run_dir


def _run(folder: Path, epochs_done: int) -> Path:
    folder.mkdir()
    (folder / "recipe.yaml").write_text("name: r\ntrain:\n  epochs: 20\n", encoding="utf-8")
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"kind": "epoch", "epoch": e, "step": e}) + "\n"
                                                  for e in range(1, epochs_done + 1)), encoding="utf-8")
    return folder


def test_a_run_still_training_is_said_to_be_with_its_epochs(tmp_path, capsys):
    training, evaluating = _run(tmp_path / "a", 3), _run(tmp_path / "b", 20)
    stopped = _run(tmp_path / "c", 3)
    with hold_run_dir(training, DistInfo()), hold_run_dir(evaluating, DistInfo()):  # as train holds them
        assert unfinished_run(training) == (f"{training} is still training (3/20 epochs done): compare it when it "
                                            f"has finished and written its evaluation report")
        assert unfinished_run(evaluating).startswith(f"{evaluating} has finished training (20/20 epochs) and is "
                                                     f"being evaluated")
        assert main(["compare", str(training), str(evaluating), "--out", str(tmp_path / "out")]) == 2
    assert "is still training (3/20 epochs done)" in capsys.readouterr().err
    assert "stopped before its first checkpoint" in unfinished_run(stopped)  # no process holds it: as before
    assert "still training" not in unfinished_run(training)  # the lock went with its holder
