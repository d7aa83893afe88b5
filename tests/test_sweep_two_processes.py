"""Two sweeps on one folder at once: the plan is merged under a lock (no configuration lost), and a run
that the other sweep is running is "running elsewhere", not a failure of this one (issue 31, item 4)."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RECIPES, ROOT
from crash_plugin import entry_point_env

from polyalign.sweep.plan import merge_plan, new_plan, read_plan
from polyalign.sweep.progress import sweep_progress

SYMILE = RECIPES / "xor-symile.yaml"
SMALL = ["data.n_train=64", "data.n_val=32", "data.n_test=32", "train.batch_size=32", "train.epochs=1",
         "train.warmup_steps=0", "train.log_every=1"]


def _merge_one_value(sweep_dir: str, value: str, start) -> None:
    plan = new_plan(SYMILE, SMALL, {"train.lr": [value]}, [0])
    start.wait()  # every process merges at the same moment
    merge_plan(Path(sweep_dir), plan)


def test_sweeps_merging_their_grids_at_once_lose_no_configuration(tmp_path):
    values = [f"0.0{i}" for i in range(1, 9)]
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(len(values))
    procs = [ctx.Process(target=_merge_one_value, args=(str(tmp_path), v, start)) for v in values]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * len(values)
    plan = read_plan(tmp_path)
    assert sorted(plan.grid["train.lr"]) == values
    assert sorted(r.id for r in plan.runs) == [f"train.lr={v}/seed-0" for v in values]


HOLD_PLUGIN = """
    import time
    from pathlib import Path
    import polyalign

    @polyalign.hookimpl
    def on_step_end(step, run_dir):
        # the clip run waits at its first step until the test lets it go
        if step == 1 and "plugin: clip" in (Path(run_dir) / "recipe.yaml").read_text():
            (Path(run_dir) / "HELD").write_text("")
            while not (Path(run_dir) / "GO").exists():
                time.sleep(0.05)
"""


def _wait_for(what: str, ready, proc: subprocess.Popen, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (rc {proc.returncode}) before {what}: {proc.communicate()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_a_second_sweep_on_the_folder_says_running_elsewhere_and_neither_fails(tmp_path):
    sweep = tmp_path / "sweep"
    base = [sys.executable, "-m", "polyalign", "sweep", str(SYMILE), *SMALL, "--jobs", "1", "--threads", "1",
            "--out", str(sweep)]
    first = subprocess.Popen([*base, "--grid", "loss.plugin=clip"], env=entry_point_env(tmp_path, "hold", HOLD_PLUGIN),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clip = sweep / "runs" / "loss.plugin=clip" / "seed-0"
    try:
        _wait_for("the clip run to be held", lambda: any(clip.glob("*/HELD")), first)
        second = subprocess.run([*base, "--grid", "loss.plugin=clip,gram"], cwd=ROOT, capture_output=True,
                                text=True, timeout=300)
        assert first.poll() is None  # the clip run is still held by the first sweep
        next(clip.glob("*/HELD")).with_name("GO").write_text("")
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    # the second sweep: its gram run done, clip "running elsewhere" (not failed), exit 0
    assert second.returncode == 0, second.stderr[-3000:]
    assert "busy: loss.plugin=clip, seed 0: running elsewhere" in second.stdout
    assert "1 run(s) are running in another process" in second.stdout and "failed" not in second.stdout
    # the first sweep: its clip run finished (the second did not mark it failed), exit 0
    assert first.returncode == 0, err[-3000:]
    status = json.loads((clip / "status.json").read_text())
    assert (status["state"], status["attempts"]) == ("done", 1)
    assert sorted(read_plan(sweep).grid["loss.plugin"]) == ["clip", "gram"]
    assert sweep_progress(sweep).counts()["done"] == 2
