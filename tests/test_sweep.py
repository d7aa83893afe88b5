"""polyalign sweep: the plan, a kill -9 in the middle and the same command again, failures recorded,
progress, and the submitit local executor."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import RECIPES, ROOT
from crash_plugin import entry_point_env
from safetensors.torch import load_file

import polyalign
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.files.weights import WEIGHTS
from polyalign.sweep.plan import config_name, find_run_dir, grid_runs, parse_grid, read_plan, split_values, sweep_groups
from polyalign.sweep.progress import sweep_progress
from polyalign.sweep.runner import run_sweep
from polyalign.sweep.worker import slot_busy

SYMILE = RECIPES / "xor-symile.yaml"
# 4 steps of 32 per epoch, 2 epochs: a checkpoint at step 4
SMALL = ["data.n_train=128", "data.n_val=32", "data.n_test=64", "train.batch_size=32", "train.epochs=2",
         "train.warmup_steps=0", "train.log_every=1"]


def test_grid_values_split_outside_brackets_and_runs_are_every_combination_times_seeds():
    assert split_values("[a, b],{x: 1, y: 2},'p,q', c") == ["[a, b]", "{x: 1, y: 2}", "'p,q'", "c"]
    grid = parse_grid(["loss.plugin=symile,clip", "train.lr=0.1,0.01"])
    runs = grid_runs(grid, [0, 1])
    assert len(runs) == 8 and runs[0].overrides == ["loss.plugin=symile", "train.lr=0.1"]
    assert [r.id for r in runs[:2]] == ["loss.plugin=symile,train.lr=0.1/seed-0",
                                        "loss.plugin=symile,train.lr=0.1/seed-1"]
    assert config_name([]) == "base"
    assert config_name(["data.path=/a/b"]).startswith("data.path=_a_b-")  # no '/' in a folder name
    for bad, why in ((["seed=1,2"], "--seeds"), (["x=1,1"], "distinct"), (["nokey"], "KEY=V1,V2"),
                     (["a=1", "a=2"], "twice")):
        with pytest.raises(PolyalignError, match=why):
            parse_grid(bad)


GATE_PLUGIN = """
    import os, time
    from pathlib import Path
    import polyalign

    @polyalign.hookimpl
    def on_step_end(step, run_dir):
        # the clip run stops for good after step 6 (its epoch-1 checkpoint is written at step 4)
        if step == 6 and "plugin: clip" in (Path(run_dir) / "recipe.yaml").read_text():
            (Path(run_dir) / "GATE").write_text(str(os.getpid()))
            while True:
                time.sleep(0.05)
"""


def _wait_for(what: str, ready, proc: subprocess.Popen | None = None, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended (rc {proc.returncode}) before {what}: {proc.stderr.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "last" / WEIGHTS))


def test_kill_9_mid_sweep_then_the_same_command_finishes_every_run_and_trains_none_twice(tmp_path):
    sweep = tmp_path / "sweep"
    command = ["sweep", str(SYMILE), *SMALL, "--grid", "loss.plugin=symile,clip,gram", "--jobs", "1",
               "--threads", "1", "--out", str(sweep)]
    env = entry_point_env(tmp_path, "gate", GATE_PLUGIN)
    proc = subprocess.Popen([sys.executable, "-m", "polyalign", *command], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    symile, clip, gram = (sweep / "runs" / f"loss.plugin={p}" / "seed-0" for p in ("symile", "clip", "gram"))
    try:
        _wait_for("the clip run's step 6", lambda: any(clip.glob("*/GATE")), proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    clip_run = find_run_dir(clip)
    _wait_for("the run's process to die with the sweep (its lock released)", lambda: not slot_busy(clip), limit=120)

    # where the kill left it: symile finished, clip mid-epoch 2 with epoch 1's checkpoint, gram not started
    symile_run = find_run_dir(symile)
    assert (symile_run / "eval" / "report.json").is_file() and (symile_run / "eval" / "ranks.json").is_file()
    assert (clip_run / "checkpoints" / "last" / WEIGHTS).is_file() and not (clip_run / "eval").exists()
    assert find_run_dir(gram) is None
    progress = sweep_progress(sweep)
    assert progress.counts() == {"done": 1, "running": 0, "failed": 0, "interrupted": 1, "pending": 1}
    kept = {p: p.stat().st_mtime_ns for p in symile_run.rglob("*") if p.is_file() and p.name != ".polyalign.lock"}

    assert main(command) == 0  # the same command again (without the plugin that held the run)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the finished run was not touched
    assert json.loads((symile / "status.json").read_text())["attempts"] == 1
    assert find_run_dir(clip) == clip_run  # resumed in place, not started again
    assert json.loads((clip / "status.json").read_text())["attempts"] == 2
    assert sweep_progress(sweep).counts()["done"] == 3

    # final weights equal those of uninterrupted runs (this process trains on one thread, as the sweep's runs)
    for plugin, slot in (("symile", symile), ("clip", clip), ("gram", gram)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the note on symile's options clip and gram do not take
            reference = polyalign.train(SYMILE, out=tmp_path / "ref", overrides=[*SMALL, f"loss.plugin={plugin}",
                                                                                 "seed=0"])
        got, want = _weights(find_run_dir(slot)), _weights(reference)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got), plugin
    assert list(sweep_groups(sweep)) == ["loss.plugin=symile", "loss.plugin=clip", "loss.plugin=gram"]


def test_a_failed_run_is_recorded_with_its_error_and_the_others_go_on_with_submitit(tmp_path, capsys):
    pytest.importorskip("submitit")
    sweep = tmp_path / "s"
    # data.n_test=0 passes validation but stops the run: its evaluators have no test split
    result = run_sweep(SYMILE, parse_grid(["data.n_test=0,64"]), 1, SMALL, sweep, jobs=2, threads=1,
                       launcher="submitit-local")
    assert result.failed.keys() == {"data.n_test=0/seed-0"}
    assert "test split is empty" in result.failed["data.n_test=0/seed-0"]
    assert (find_run_dir(sweep / "runs" / "data.n_test=64" / "seed-0") / "eval" / "report.json").is_file()
    progress = sweep_progress(sweep)
    assert progress.counts() == {"done": 1, "running": 0, "failed": 1, "interrupted": 0, "pending": 0}
    assert progress.seconds_left == 0  # the failed run waits for the next call of the sweep
    assert "test split is empty" in progress.text() and "time left: none" in progress.text()
    assert main(["sweep", "--status", str(sweep)]) == 0
    assert "1 done, 1 failed" in capsys.readouterr().out
    assert len(read_plan(sweep).runs) == 2


def test_a_sweep_refuses_a_folder_of_another_sweep_and_reports_every_bad_run_before_starting(tmp_path, capsys):
    sweep = tmp_path / "s"
    (sweep).mkdir()
    with pytest.raises(PolyalignError, match=r"train.lr=-1: train.lr"):
        run_sweep(SYMILE, parse_grid(["train.lr=0.1,-1"]), 1, SMALL, sweep)
    assert not (sweep / "sweep.json").exists()
    from polyalign.sweep.plan import merge_plan, new_plan

    merge_plan(sweep, new_plan(SYMILE, SMALL, {}, [0]))
    with pytest.raises(PolyalignError, match="holds a sweep of"):
        merge_plan(sweep, new_plan(SYMILE, SMALL[:-1], {}, [0]))
    assert main(["sweep", str(SYMILE), "--grid", "nokey"]) == 2
    assert "KEY=V1,V2" in capsys.readouterr().err


def test_optuna_search_on_sqlite_writes_the_best_recipe_and_the_same_command_adds_no_trial(tmp_path):
    optuna = pytest.importorskip("optuna")
    from polyalign.sweep.optuna_search import parse_space, run_search

    space = ["loss.plugin=symile,clip", "train.lr=0.01..0.1/log"]
    assert parse_space(space + ["train.epochs=1..3"])["train.epochs"] == {"kind": "int", "low": 1, "high": 3,
                                                                          "log": False}
    with pytest.raises(PolyalignError, match="LOW < HIGH"):
        parse_space(["train.lr=0.1..0.01"])
    out = tmp_path / "search"
    args = (SYMILE, space, 2, "zero_shot/b_from_a+c/accuracy", "maximize", SMALL, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_search(*args)
    assert result.states == {"COMPLETE": 2}
    study = optuna.load_study(study_name="xor-symile", storage=f"sqlite:///{out / 'study.db'}")
    best = study.best_trial
    assert result.best_value == best.value == max(t.value for t in study.trials)
    recipe = polyalign.load_recipe(result.best_recipe)
    assert recipe.losses[0].plugin == best.params["loss.plugin"]
    assert recipe.train.lr == pytest.approx(best.params["train.lr"])
    assert result.best_run == best.user_attrs["run_dir"] and (Path(result.best_run) / "eval" / "ranks.json").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_search(*args).states == {"COMPLETE": 2}  # the same command: the study has its trials
    assert len(sweep_groups(out)) == 2


def test_a_trial_worse_than_the_pruner_allows_stops_after_its_first_epoch(tmp_path):
    optuna = pytest.importorskip("optuna")
    from polyalign.sweep.optuna_search import run_search

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_search(SYMILE, ["train.lr=0.01,0.02"], 1, "zero_shot/b_from_a+c/accuracy", "maximize", SMALL,
                            tmp_path / "s", pruner=optuna.pruners.ThresholdPruner(upper=-1.0))  # any loss is above
    assert result.states == {"PRUNED": 1} and result.best_recipe is None
    (run,) = [find_run_dir(s) for s in (tmp_path / "s" / "runs").iterdir()]
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r.get("kind") == "epoch"] == [1] and not (run / "eval").exists()


def test_a_sweep_file_next_to_the_recipe_gives_the_grid_seeds_and_overrides(tmp_path):
    from polyalign.sweep.plan import read_sweep_file

    (tmp_path / "r.yaml").write_text(SYMILE.read_text())
    path = tmp_path / "r.sweep.yaml"
    path.write_text("recipe: r.yaml\nsweep:\n  grid: {loss: [{plugin: clip}, {plugin: symile, negatives: n}],"
                    " data.p_hat: [0.5, 1.0]}\n  seeds: 2\n  overrides: [train.epochs=1]\n")
    written = read_sweep_file(path)
    assert written.recipe == tmp_path / "r.yaml" and written.seeds == 2 and written.overrides == ["train.epochs=1"]
    grid = parse_grid(written.grid)
    assert grid == {"loss": ["{plugin: clip}", "{negatives: n, plugin: symile}"], "data.p_hat": ["0.5", "1.0"]}
    assert polyalign.load_recipe(written.recipe, [f"loss={grid['loss'][1]}"]).losses[0].options()["negatives"] == "n"
    assert read_sweep_file(SYMILE) is None  # a recipe
    path.write_text("recipe: r.yaml\nsweep: {grid: {loss.plugin: clip}, seed: 2}\n")
    with pytest.raises(PolyalignError, match="unknown key"):
        read_sweep_file(path)
