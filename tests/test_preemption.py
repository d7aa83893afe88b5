"""Stopping on a cluster's signals and launching one training through submitit or Slurm.

A run sent SIGTERM (or USR1/USR2) stops at the next optimizer step with a checkpoint; resumed (by hand, or by
the requeued job) it ends with the weights of an uninterrupted run. `--launcher slurm` writes an sbatch file
holding the nodes, tasks, GPUs and signal; scripts/slurm-train.sbatch requeues a stopped run and resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from crash_plugin import entry_point_env
from safetensors.torch import load_file
from test_reliability_resume import _logged_step

import polyalign
from polyalign.cli import main
from polyalign.core.plugin_manager import make_plugins
from polyalign.files.weights import WEIGHTS, load_state
from polyalign.launch import JOB_FILE, read_job
from polyalign.training import checkpoint as ckpt
from polyalign.training.loop import TIMING_KEYS
from polyalign.training.preemption import Stopped

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # processes, signals and resumed trainings: minutes on 2 cores
XOR = ROOT / "polyalign" / "recipes" / "xor-clip.yaml"
# 8 batches of 32 per epoch: 8 steps per epoch, 16 in all; one thread, so that every process computes alike
RECIPE = ["data.n_train=256", "data.n_val=64", "data.n_test=64", "train.batch_size=32", "train.epochs=2",
          "train.warmup_steps=2", "train.log_every=1", "train.checkpoint_every=3", "train.keep_last=2",
          "train.threads=1", "missing.train_rate={b: 0.3}"]
SLOW_PLUGIN = """
    import time
    import polyalign

    @polyalign.hookimpl
    def on_step_end(step):
        time.sleep(0.15)  # slows the run down so that a signal lands mid-epoch
"""


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _assert_same_run(a: Path, b: Path) -> None:
    for name in ("last", "best"):
        wa, wb = (load_file(str(r / "checkpoints" / name / WEIGHTS)) for r in (a, b))
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{name}: {k} differs"
    assert _rows(a) == _rows(b)
    assert json.loads((a / "eval" / "report.json").read_text()) == json.loads((b / "eval" / "report.json").read_text())


def _wait_for_step(proc: subprocess.Popen, out: Path, step: int) -> None:
    deadline = time.monotonic() + 300
    while _logged_step(out) < step:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before step {step}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for step {step}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted one-process run the plain-train tests compare against."""
    return polyalign.train(XOR, out=tmp_path_factory.mktemp("ref"), overrides=RECIPE)


def test_sigterm_stops_at_the_next_step_with_a_checkpoint_and_resume_matches(tmp_path, reference):
    out = tmp_path / "cut"
    env = {**entry_point_env(tmp_path, "slow", SLOW_PLUGIN), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "polyalign", "train", str(XOR), *RECIPE, "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _wait_for_step(proc, out, 4)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    (run,) = out.iterdir()
    stopped = load_state(run / "checkpoints" / "last")["step"]
    assert 4 <= stopped < 8  # mid-epoch 1, at the step after the signal: nothing trained is lost
    assert _logged_step(out) == stopped
    assert f"stopped by SIGTERM after step {stopped} of 16" in stderr
    assert f"polyalign train --resume {run}" in stderr
    assert main(["train", "--resume", str(run)]) == 0
    _assert_same_run(reference, run)


def test_a_second_signal_during_the_save_loses_nothing(tmp_path, monkeypatch, reference):
    armed = []

    class SignalAtStep5:
        @polyalign.hookimpl
        def on_step_end(self, step):
            if step == 5:
                armed.append(True)
                os.kill(os.getpid(), signal.SIGTERM)

    write = ckpt.save_tensors

    def signalled_mid_save(tensors, path):
        if armed:  # the stop's own save: the weights half written when two more signals come
            armed.clear()
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGTERM)
        write(tensors, path)

    monkeypatch.setattr(ckpt, "save_tensors", signalled_mid_save)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as stop:
        polyalign.train(XOR, out=tmp_path, overrides=RECIPE, plugins=make_plugins(extra=[SignalAtStep5()]))
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
    run = stop.value.run_dir
    assert (stop.value.signum, stop.value.step) == (signal.SIGTERM, 5)
    assert load_state(run / "checkpoints" / "last")["step"] == 5
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    _assert_same_run(reference, run)


def _launch(args: list[str], out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "polyalign", "train", str(XOR), *RECIPE, "--launcher",
                             "submitit-local", "--tasks", "2", "--out", str(out), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def test_submitit_local_two_processes_preempted_requeued_resumed_match_an_uninterrupted_run(tmp_path):
    pytest.importorskip("submitit")
    env = {**entry_point_env(tmp_path, "slow", SLOW_PLUGIN), "OMP_NUM_THREADS": "1", "MASTER_PORT": "29617"}
    full = _launch([], tmp_path / "full", env)
    said, _ = full.communicate(timeout=600)
    assert full.returncode == 0, said[-3000:]
    out = tmp_path / "cut"
    cut = _launch([], out, {**env, "MASTER_PORT": "29619"})
    try:
        _wait_for_step(cut, out, 4)
        (run,) = out.iterdir()
        os.kill(int(read_job(run)["job_id"]), signal.SIGTERM)  # submitit's controller sends it to both processes
        said, _ = cut.communicate(timeout=600)
    finally:
        cut.kill()
    assert cut.returncode == 0, said[-3000:]
    job = json.loads((run / JOB_FILE).read_text())
    assert (job["state"], job["starts"], job["signal"], job["tasks"]) == ("finished", 2, "SIGTERM", 2)
    assert 4 <= job["step"] < 8  # stopped mid-epoch 1
    assert sum(1 for r in _rows(run) if r.get("kind") == "epoch") == 2  # logged once, by rank 0
    _assert_same_run(next((tmp_path / "full").iterdir()), run)
    status = subprocess.run([sys.executable, "-m", "polyalign", "train", "--status", str(run)], capture_output=True,
                            text=True, env=env, cwd=ROOT, check=True).stdout
    assert "finished" in status and "requeued 1 time" in status and f"job {job['job_id']}" in status


def _fake_slurm(tmp_path: Path) -> dict[str, str]:
    """PATH with a fake srun and an sbatch that keeps the file it is given and answers as Slurm does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/submitted.sh\necho 'Submitted batch job 4242'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_slurm_launcher_writes_an_sbatch_file_with_nodes_tasks_gpus_and_signal(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", _fake_slurm(tmp_path)["PATH"])
    assert main(["train", str(XOR), "--launcher", "slurm", "--nodes", "2", "--gpus-per-node", "4", "--partition",
                 "gpu", "--time", "240", "--mem-gb", "64", "--slurm-option", "account=lab",
                 "--slurm-option", "qos=high", "--out", str(tmp_path / "runs")]) == 0
    said = capsys.readouterr().out
    lines = (tmp_path / "submitted.sh").read_text().splitlines()
    for option in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--time=240",
                   "--mem=64GB", "--account=lab", "--qos=high"):
        assert f"#SBATCH {option}" in lines, option
    signal_line = [line for line in lines if line.startswith("#SBATCH --signal=")]
    assert signal_line and signal_line[0].split("=")[1].split("@")[0] in ("USR1", "USR2")
    assert any(line.startswith("srun ") and "submitit.core._submit" in line for line in lines)
    (run,) = (tmp_path / "runs").iterdir()
    job = read_job(run)
    assert (job["state"], job["job_id"], job["nodes"], job["tasks"]) == ("queued", "4242", 2, 8)
    assert "submitted job 4242" in said and f"polyalign train --status {run}" in said
    assert main(["train", "--status", str(run)]) == 0
    assert "queued" in capsys.readouterr().out


def test_slurm_launcher_without_slurm_or_with_a_bad_option_says_what_to_do(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    assert main(["train", str(XOR), "--launcher", "slurm", "--out", str(tmp_path / "runs")]) == 2
    assert "no srun on this machine" in capsys.readouterr().err
    assert main(["train", str(XOR), "--launcher", "slurm", "--slurm-option", "account", "--out",
                 str(tmp_path / "runs")]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["train", str(XOR), "--nodes", "2", "--partition", "gpu", "--out", str(tmp_path / "runs")]) == 2
    assert "--nodes, --partition: for a job, with --launcher slurm" in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("*"))  # no run directory left behind


SBATCH = ROOT / "scripts" / "slurm-train.sbatch"


def test_the_sbatch_script_asks_for_a_signal_and_requeues_a_stopped_run_then_resumes_it(tmp_path):
    text = SBATCH.read_text()
    assert subprocess.run(["bash", "-n", str(SBATCH)], check=False).returncode == 0
    assert "#SBATCH --signal=USR1@120" in text and "#SBATCH --requeue" in text
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    fakes = {"srun": f'echo "srun $*" >> {log}; shift; "$@"',  # one task: drops --kill-on-bad-exit, runs the rest
             "scontrol": f'if [ "$1" = show ]; then echo node1; echo node2; else echo "scontrol $*" >> {log}; fi',
             "fakepython": f'echo "python $*" >> {log}; exit ${{FAKE_RC:-0}}'}
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": "fakepython",
           "SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "node[1-2]", "POLYALIGN_OUT": str(tmp_path / "runs"),
           "FAKE_RC": "143"}
    first = subprocess.run(["bash", str(SBATCH), "recipe.yaml", "train.lr=0.1"], env=env, capture_output=True,
                           text=True, cwd=tmp_path, check=False)
    assert first.returncode == 143
    calls = log.read_text().splitlines()
    assert calls[1] == f"python -m polyalign train recipe.yaml train.lr=0.1 --out {tmp_path}/runs/job-77"
    assert calls[-1] == "scontrol requeue 77"
    run = tmp_path / "runs" / "job-77" / "xor-clip-20261201-000000"
    run.mkdir(parents=True)
    log.unlink()
    again = subprocess.run(["bash", str(SBATCH), "recipe.yaml"], env={**env, "FAKE_RC": "0"}, capture_output=True,
                           text=True, cwd=tmp_path, check=False)
    assert again.returncode == 0
    assert log.read_text().splitlines() == [f"srun --kill-on-bad-exit=1 fakepython -m polyalign train --resume {run}/",
                                            f"python -m polyalign train --resume {run}/"]


def test_status_says_where_a_launched_run_stands(tmp_path, capsys):
    from polyalign.launch import write_job

    run = tmp_path / "run"
    run.mkdir()
    assert main(["train", "--status", str(run)]) == 0
    assert "trained without a launcher" in capsys.readouterr().out
    write_job(run, launcher="slurm", state="running", job_id="4242", nodes=2, tasks=8, hosts=["gpu1", "gpu2"],
              starts=3, logs=str(run / "submitit"))
    assert main(["train", "--status", str(run)]) == 0
    said = capsys.readouterr().out
    assert "running on 2 node(s) (8 processes: gpu1, gpu2), requeued 2 times" in said and "job 4242" in said
    write_job(run, state="requeued", signal="SIGUSR2", step=120)
    assert main(["train", "--status", str(run)]) == 0
    assert "requeued after SIGUSR2 at step 120, waiting to start again, requeued 3 times" in capsys.readouterr().out
    write_job(run, state="failed", error="CUDA out of memory")
    assert main(["train", "--status", str(run)]) == 0
    assert "failed: CUDA out of memory" in capsys.readouterr().out
    assert main(["train", "--status", str(tmp_path / "nothing")]) == 2
    assert "no such run directory" in capsys.readouterr().err


class Killed(BaseException):
    """Stands for a rank lost mid-run (no ``except Exception`` handler runs)."""


def test_a_process_torchrun_restarts_continues_its_run_from_the_last_checkpoint(tmp_path, monkeypatch, reference):
    class DieAtStep5:
        @polyalign.hookimpl
        def on_step_end(self, step):
            if step == 5:
                raise Killed

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job/7")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    with pytest.raises(Killed):
        polyalign.train(XOR, out=tmp_path, overrides=RECIPE, plugins=make_plugins(extra=[DieAtStep5()]))
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert load_state(run / "checkpoints" / "last")["step"] == 3
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # the same command, started again by torchrun
    assert polyalign.train(XOR, out=tmp_path, overrides=RECIPE) == run.resolve()
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == [run]
    _assert_same_run(reference, run)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")  # a new torchrun command: a new run
    assert polyalign.train(XOR, out=tmp_path, overrides=[*RECIPE, "train.epochs=1"]) != run.resolve()
