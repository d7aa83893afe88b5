"""Crash and resume: a real SIGKILL, kills in the middle of a save, a full disk, torn log rows.

Every test compares against one uninterrupted run of the same recipe: the resumed run must end
with bit-identical weights and the same metrics.jsonl rows (timing keys aside).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from crash_plugin import entry_point_env
from safetensors.torch import load_file

import polyalign
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.core.plugin_manager import make_plugins
from polyalign.files.atomic import WriteError, atomic_write_text
from polyalign.files.weights import WEIGHTS, load_state, load_weights
from polyalign.training import checkpoint as ckpt
from polyalign.training.loop import TIMING_KEYS
from polyalign.training.run_dir import RESUMABLE, changed_keys
from polyalign.training.run_lock import RunBusyError, lock_run_dir

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "recipes" / "xor-clip.yaml"
# 16 batches of 32 per epoch, 2 batches per step: 8 steps per epoch, 16 in all
KILL_RECIPE = ["data.n_train=512", "data.n_val=64", "data.n_test=64", "train.batch_size=32",
               "train.accumulate=2", "train.epochs=2", "train.warmup_steps=3", "train.log_every=1",
               "train.checkpoint_every=3", "train.keep_last=2", "missing.train_rate={a: 0.2}"]
# 8 batches of 32 per epoch: 8 steps per epoch, 16 in all
SMALL_RECIPE = ["data.n_train=256", "data.n_val=64", "data.n_test=64", "train.batch_size=32",
                "train.epochs=2", "train.warmup_steps=2", "train.log_every=1",
                "train.checkpoint_every=3", "train.keep_last=2", "missing.train_rate={b: 0.3}"]


class Killed(BaseException):
    """Stands for SIGKILL in-process: no ``except Exception``/``except OSError`` handler runs."""


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _assert_same_run(a: Path, b: Path) -> None:
    for name in ("last", "best"):
        wa = load_file(str(a / "checkpoints" / name / WEIGHTS))
        wb = load_file(str(b / "checkpoints" / name / WEIGHTS))
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{name}: {k} differs"
    assert _rows(a) == _rows(b)
    assert json.loads((a / "eval" / "report.json").read_text()) == \
        json.loads((b / "eval" / "report.json").read_text())


def _only_run(folder: Path) -> Path:
    (run,) = [p for p in folder.iterdir() if p.is_dir()]
    return run




@pytest.fixture(scope="module")
def small_reference(tmp_path_factory) -> Path:
    """The uninterrupted run every in-process crash test compares against."""
    return polyalign.train(XOR, out=tmp_path_factory.mktemp("ref"), overrides=SMALL_RECIPE)


# --------------------------------------------------------------------------- SIGKILL
SLOW_PLUGIN = """
    import time
    import polyalign

    @polyalign.hookimpl
    def on_step_end(step):
        time.sleep(0.04)  # slows the run down so that a kill lands mid-training
"""


def _slow_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess that loads a plugin (entry point) slowing each step."""
    return {**entry_point_env(tmp_path, "slow", SLOW_PLUGIN),
            "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same arithmetic as this process


def _logged_step(out: Path) -> int:
    """The highest step in metrics.jsonl of the single run under ``out`` (0 if none yet)."""
    best = 0
    for metrics in out.glob("*/metrics.jsonl"):
        for line in metrics.read_text().splitlines():
            try:
                best = max(best, json.loads(line).get("step", 0))
            except ValueError:
                pass
    return best


def _kill_when(cmd: list[str], env: dict, out: Path, at_step: int) -> None:
    """Run ``cmd``; SIGKILL it once metrics.jsonl shows step ``at_step``; check it was killed."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.monotonic() + 240
    try:
        while _logged_step(out) < at_step:
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc {proc.returncode}) before step {at_step}: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("timed out waiting for the run to reach the kill step")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_then_resume_twice_matches_uninterrupted_run(tmp_path):
    full = polyalign.train(XOR, out=tmp_path / "full", overrides=KILL_RECIPE)
    cut_out = tmp_path / "cut"
    # a real SIGKILL mid-epoch, between step checkpoints, with a half-full accumulation window
    _kill_when([sys.executable, "-m", "polyalign", "train", str(XOR), *KILL_RECIPE, "--out", str(cut_out)],
               _slow_env(tmp_path), cut_out, at_step=5)
    cut = _only_run(cut_out)
    first = load_state(cut / "checkpoints" / "last")
    assert 0 < first["step"] < 8 and first["step"] % 3 == 0
    assert _logged_step(cut_out) > first["step"]  # rows past the checkpoint, dropped on resume

    class DieAtStep14:
        @polyalign.hookimpl
        def on_step_end(self, step):
            if step == 14:
                raise Killed

    # the resumed run dies too (in the next epoch), and is resumed again through the CLI
    with pytest.raises(Killed):
        polyalign.train(None, resume=cut, plugins=make_plugins(extra=[DieAtStep14()]))
    assert load_state(cut / "checkpoints" / "last")["step"] == 12
    assert main(["train", "--resume", str(cut)]) == 0
    _assert_same_run(full, cut)
    # step checkpoints: the keep_last=2 newest, complete; no leftovers of interrupted saves
    steps = ckpt.step_checkpoints(cut / "checkpoints")
    assert [s for s, _ in steps] == [15, 16]
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["best", "last", "step-00000015",
                                                                        "step-00000016"]
    last = load_file(str(cut / "checkpoints" / "last" / WEIGHTS))
    newest = load_file(str(steps[-1][1] / WEIGHTS))
    assert all(torch.equal(last[k], newest[k]) for k in last)
    assert load_state(cut / "checkpoints" / "last")["step"] == 16


# --------------------------------------------------------------------------- kills during a save
def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, small_reference):
    real = ckpt.save_tensors
    calls = []

    def dies_on_third_save(tensors, filename, *a, **k):
        calls.append(filename)
        if len(calls) == 3:  # step 8 (end of epoch 1): half a weights file, then the process dies
            Path(filename).write_bytes(b"\x00" * 100)
            raise Killed
        return real(tensors, filename, *a, **k)

    monkeypatch.setattr(ckpt, "save_tensors", dies_on_third_save)
    with pytest.raises(Killed):
        polyalign.train(XOR, out=tmp_path, overrides=SMALL_RECIPE)
    monkeypatch.setattr(ckpt, "save_tensors", real)
    run = _only_run(tmp_path)
    assert (run / "checkpoints" / ".step-00000008.tmp").is_dir()  # the torn save
    assert load_state(ckpt.latest_checkpoint(run / "checkpoints"))["step"] == 6
    polyalign.train(None, resume=run)
    _assert_same_run(small_reference, run)
    assert not list((run / "checkpoints").glob(".*"))  # leftovers cleaned by later saves


def test_kill_between_the_two_renames_of_the_swap(tmp_path, monkeypatch, small_reference):
    real = os.replace
    swaps = []

    def dies_in_second_rename(src, dst, *a, **k):
        if Path(src).name == ".last.tmp":  # the old `last` is already `.last.old`
            swaps.append(src)
            if len(swaps) == 2:
                raise Killed
        return real(src, dst, *a, **k)

    monkeypatch.setattr(ckpt.os, "replace", dies_in_second_rename)
    with pytest.raises(Killed):
        polyalign.train(XOR, out=tmp_path, overrides=SMALL_RECIPE)
    monkeypatch.setattr(ckpt.os, "replace", real)
    run = _only_run(tmp_path)
    root = run / "checkpoints"
    assert not (root / "last").exists() and (root / ".last.old").is_dir()
    assert load_state(root / "last")["step"] == 3  # resolved to the previous version
    assert load_weights(root / "last")
    polyalign.train(None, resume=run)
    _assert_same_run(small_reference, run)


def test_full_disk_is_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys, small_reference):
    real = ckpt.save_tensors
    calls = []

    def disk_fills_up(tensors, filename, *a, **k):
        calls.append(filename)
        if len(calls) >= 2:
            Path(filename).write_bytes(b"\x00" * 10)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real(tensors, filename, *a, **k)

    monkeypatch.setattr(ckpt, "save_tensors", disk_fills_up)
    overrides = SMALL_RECIPE
    assert main(["train", str(XOR), *overrides, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "No space left on device" in err and "--resume" in err and "last complete checkpoint is kept" in err
    assert "step-00000006" in err  # the checkpoint it could not write
    run = _only_run(tmp_path)
    assert load_state(run / "checkpoints" / "last")["step"] == 3
    assert not list((run / "checkpoints").glob(".*.tmp"))
    # space is freed: resume and finish as if nothing happened
    monkeypatch.setattr(ckpt, "save_tensors", real)
    assert main(["train", "--resume", str(run)]) == 0
    _assert_same_run(small_reference, run)


def test_atomic_write_on_full_disk_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    atomic_write_text(target, "old\n")

    class FullFile:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("builtins.open", FullFile)
    with pytest.raises(WriteError, match="No space left on device.*free some space"):
        atomic_write_text(target, "new\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_full_disk_while_logging_is_a_clear_error(tmp_path, monkeypatch, capsys, small_reference):
    real_open = open

    def full_when_appending(file, mode="r", *a, **k):
        if "a" in mode and str(file).endswith(("metrics.csv", "metrics.jsonl")) and Path(file).is_file() and \
                len(Path(file).read_text().splitlines()) >= 7:  # full after 7 lines
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr("builtins.open", full_when_appending)
    for logging in ("jsonl", "csv"):
        out = tmp_path / logging
        assert main(["train", str(XOR), *SMALL_RECIPE, f"logging=[{logging}]", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "No space left on device" in err and "--resume" in err, err
        assert f"metrics.{logging}" in err
        assert load_state(_only_run(out) / "checkpoints" / "last")["step"] == 6
    monkeypatch.undo()
    run = _only_run(tmp_path / "jsonl")
    assert main(["train", "--resume", str(run)]) == 0
    _assert_same_run(small_reference, run)


def test_resume_before_the_first_checkpoint_starts_over(tmp_path, small_reference):
    class DieAtStepTwo:
        @polyalign.hookimpl
        def on_step_end(self, step):
            if step == 2:
                raise Killed

    with pytest.raises(Killed):
        polyalign.train(XOR, out=tmp_path, overrides=SMALL_RECIPE, plugins=make_plugins(extra=[DieAtStepTwo()]))
    run = _only_run(tmp_path)
    assert ckpt.latest_checkpoint(run / "checkpoints") is None and _rows(run)
    polyalign.train(None, resume=run)
    _assert_same_run(small_reference, run)


def test_torn_last_rows_of_metrics_files_are_dropped_on_resume(tmp_path, small_reference):
    class DieAfterStepFive:
        @polyalign.hookimpl
        def on_step_end(self, step, run_dir):
            if step == 5:  # killed in the middle of writing a row to each log
                with open(Path(run_dir) / "metrics.jsonl", "a") as fh:
                    fh.write('{"kind": "step", "step": 6, "lo')
                with open(Path(run_dir) / "metrics.csv", "a") as fh:
                    fh.write("step,")  # the step number is cut off
                raise Killed

    overrides = SMALL_RECIPE + ["logging=[jsonl, csv]"]
    with pytest.raises(Killed):
        polyalign.train(XOR, out=tmp_path, overrides=overrides, plugins=make_plugins(extra=[DieAfterStepFive()]))
    run = _only_run(tmp_path)
    polyalign.train(None, resume=run)
    _assert_same_run(small_reference, run)
    with open(run / "metrics.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    rows = _rows(run)
    assert [(r["kind"], int(r["step"])) for r in table] == [(r["kind"], r["step"]) for r in rows]
    assert [float(r["loss"]) for r in table if r["kind"] == "step"] == [r["loss"] for r in rows if r["kind"] == "step"]


def test_step_checkpoints_are_pruned_to_keep_last(small_reference):
    root = small_reference / "checkpoints"
    assert [s for s, _ in ckpt.step_checkpoints(root)] == [15, 16]  # every 3 steps + each epoch end
    for name in ("last", "best"):
        assert load_state(root / name)["step"] in (8, 16)
    assert load_state(root / "last")["step"] == 16


# --------------------------------------------------------------------------- one process per run directory
LOCK_HOLDER = """
import sys, time
from pathlib import Path
from polyalign.training.run_lock import lock_run_dir
lock_run_dir(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_process_on_a_run_is_refused_and_a_killed_holder_blocks_nothing(tmp_path, capsys):
    run = polyalign.train(XOR, out=tmp_path, overrides=SMALL_RECIPE[:5])
    before = (run / "metrics.jsonl").read_text()
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--resume", str(run), "train.epochs=3"]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another polyalign process (pid {holder.pid} on host {socket.gethostname()}" in err
        assert (run / "metrics.jsonl").read_text() == before and "epochs: 2" in (run / "recipe.yaml").read_text()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
    assert main(["train", "--resume", str(run), "train.epochs=3"]) == 0  # the kernel dropped the dead holder's lock
    assert any(json.loads(line).get("epoch") == 3 for line in (run / "metrics.jsonl").read_text().splitlines())


def test_the_lock_is_held_for_the_whole_run_and_released_after(tmp_path):
    seen = []

    class TryTheLock:
        @polyalign.hookimpl
        def on_epoch_end(self, run_dir, epoch):
            with pytest.raises(RunBusyError, match=f"pid {os.getpid()} on host"):
                lock_run_dir(run_dir)
            seen.append(epoch)

    run = polyalign.train(XOR, out=tmp_path, overrides=SMALL_RECIPE[:5], plugins=make_plugins(extra=[TryTheLock()]))
    assert seen == [1, 2]
    os.close(lock_run_dir(run))  # free again


# --------------------------------------------------------------------------- --resume with overrides
def test_resume_applies_and_records_what_may_change(tmp_path, capsys):
    run = polyalign.train(XOR, out=tmp_path, overrides=SMALL_RECIPE[:5])  # 2 epochs, finished
    assert main(["train", "--resume", str(run), "train.epochs=3", "train.log_every=1", "train.batch_size=32"]) == 0
    recipe = polyalign.load_recipe(run / "recipe.yaml")
    assert (recipe.train.epochs, recipe.train.log_every) == (3, 1)  # recorded (batch_size=32 is no change)
    rows = _rows(run)
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2, 3]
    assert [r["step"] for r in rows if r["kind"] == "step" and r["epoch"] == 3] == list(range(17, 25))
    assert load_state(run / "checkpoints" / "last")["epoch"] == 3


def test_resume_refuses_what_would_make_it_another_run(tmp_path, capsys):
    run = polyalign.train(XOR, out=tmp_path, overrides=SMALL_RECIPE[:5])
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".polyalign.lock"}
    assert main(["train", "--resume", str(run), "train.batch_size=8", "loss.temperature=0.1", "seed=3",
                 "train.epochs=4"]) == 2
    err = capsys.readouterr().err
    assert "seed, loss.temperature, train.batch_size cannot change when a run is resumed" in err, err
    assert f"polyalign train {run / 'recipe.yaml'} train.batch_size=8" in err and "What may change: " in err
    assert {p: p.read_bytes() for p in files} == files  # nothing was touched, not even the allowed epochs


def test_the_keys_a_resume_may_change_are_the_documented_ones():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    for key in RESUMABLE:
        assert f"`{key}`" in doc, key
    assert changed_keys({"a": {"b": 1, "c": [1]}, "d": 2}, {"a": {"b": 2, "c": [1, 2]}, "e": 3}) == \
        ["a.b", "a.c", "d", "e"]


# --------------------------------------------------------------------------- leftovers
def test_a_kill_during_pruning_leaves_nothing_the_next_pruning_does_not_remove(tmp_path, monkeypatch,
                                                                              small_reference):
    real_rmtree = ckpt.shutil.rmtree

    def killed_mid_delete(path, *args, **kwargs):
        if Path(path).name.startswith("step-"):
            (Path(path) / "state.pt").unlink()  # the first file is gone, then the process dies
            raise Killed
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_mid_delete)
    with pytest.raises(Killed):
        polyalign.train(XOR, out=tmp_path, overrides=SMALL_RECIPE)
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    run = _only_run(tmp_path)
    root = run / "checkpoints"
    left = sorted(p.name for p in root.glob("step-*"))
    assert len(left) == 3 and not (root / left[0] / "state.pt").exists()  # a half-deleted step folder
    polyalign.train(None, resume=run)
    assert sorted(p.name for p in root.glob("step-*")) == sorted(
        p.name for p in (small_reference / "checkpoints").glob("step-*"))
    _assert_same_run(small_reference, run)


def test_prune_removes_incomplete_and_temporary_step_folders(tmp_path):
    for step in (1, 2, 5):
        ckpt.save_checkpoint(tmp_path / ckpt.step_checkpoint_name(step), {"w": torch.zeros(1)}, {"step": step})
    (tmp_path / "step-00000003").mkdir()
    (tmp_path / "step-00000003" / WEIGHTS).write_bytes(b"")  # state.pt already deleted by a killed pruning
    (tmp_path / ".step-00000004.tmp").mkdir()
    deleted = ckpt.prune_step_checkpoints(tmp_path, keep=1)
    assert sorted(p.name for p in deleted) == [".step-00000004.tmp", "step-00000001", "step-00000002",
                                               "step-00000003"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000005"]


# --------------------------------------------------------------------------- failing before the first step
class FailAtStart:
    @polyalign.hookimpl
    def on_train_start(self):
        raise RuntimeError("a logger could not start")


@pytest.mark.parametrize("failure", ["plugin", "interrupt", "data"])
def test_a_new_run_that_fails_before_its_first_step_leaves_no_run_directory(failure, tmp_path, monkeypatch):
    overrides, plugins = list(SMALL_RECIPE), None
    if failure == "plugin":
        plugins = make_plugins(extra=[FailAtStart()])
    elif failure == "interrupt":
        monkeypatch.setattr(polyalign.run.Trainer, "fit", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    else:
        overrides.append("modalities.a.encoder.dim=7")
    with pytest.raises((RuntimeError, KeyboardInterrupt, PolyalignError)):
        polyalign.train(XOR, out=tmp_path, overrides=overrides, plugins=plugins)
    assert list(tmp_path.iterdir()) == []
