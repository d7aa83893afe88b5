"""Torch threads of a training process: chosen from the CPUs it may use, recorded, and given back;
OpenMP told to wait passively before torch loads it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import ROOT

import polyalign
from polyalign.training import threads
from polyalign.training.threads import auto_threads, cgroup_cpu_limit


def _cgroup(tmp_path, membership: str, files: dict[str, str]):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "self-cgroup").write_text(membership)
    return tmp_path, tmp_path / "self-cgroup"


def test_cgroup_quota_is_the_smallest_on_the_way_up(tmp_path):
    v2 = _cgroup(tmp_path / "v2", "0::/a/b\n", {"cpu.max": "max 100000\n", "a/cpu.max": "150000 100000\n",
                                                 "a/b/cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(*v2) == 1.5
    assert cgroup_cpu_limit(*_cgroup(tmp_path / "free", "0::/\n", {"cpu.max": "max 100000\n"})) is None
    v1 = _cgroup(tmp_path / "v1", "4:cpu,cpuacct:/job\n3:memory:/job\n",
                 {"cpu,cpuacct/job/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/job/cpu.cfs_period_us": "100000\n",
                  "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_limit(*v1) == 0.5
    assert cgroup_cpu_limit(tmp_path / "none", tmp_path / "no-such-file") is None


@pytest.mark.parametrize("cpus, quota, local, workers, given, expected", [
    (8, None, 1, 0, 8, 8),   # all of the machine
    (8, None, 2, 1, 8, 3),   # two processes under torchrun, one DataLoader worker each
    (8, 1.5, 1, 0, 8, 2),    # a cgroup quota of 1.5 CPUs
    (2, None, 1, 3, 2, 1),   # more workers than CPUs: still one thread
    (8, None, 1, 0, 1, 1),   # never more than torch was given (OMP_NUM_THREADS, set_num_threads)
])
def test_auto_threads(monkeypatch, cpus, quota, local, workers, given, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: quota)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    monkeypatch.setattr(threads.torch, "get_num_threads", lambda: given)
    assert auto_threads(workers) == expected


def test_threads_are_recorded_and_the_callers_are_given_back(tmp_path, tiny_xor):
    before = torch.get_num_threads()
    run = polyalign.train(ROOT / "polyalign" / "recipes" / "xor-clip.yaml", out=tmp_path,
                          overrides=tiny_xor + ["eval=[]"])
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["threads"] == auto_threads(0)
    run = polyalign.train(ROOT / "polyalign" / "recipes" / "xor-clip.yaml", out=tmp_path,
                          overrides=tiny_xor + ["eval=[]", "train.threads=2", "train.max_steps=1"])
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["threads"] == 2
    assert torch.get_num_threads() == before
    with pytest.raises(polyalign.core.errors.RecipeError, match="train.threads: .*1 to 1024"):
        polyalign.load_recipe(ROOT / "polyalign" / "recipes" / "xor-clip.yaml", ["train.threads=0"])


@pytest.mark.slow
def test_the_command_makes_openmp_wait_passively_unless_told_otherwise():
    code = ("import os, sys; from polyalign.cli import main; code = main(['validate', 'xor-clip']); "
            "print(code, 'torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    for given, expected in [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE")]:
        proc = subprocess.run([sys.executable, "-c", code], env={**env, **given}, capture_output=True, text=True,
                              cwd=ROOT, check=True)
        # torch was loaded by `validate`, after the command set the policy (it sets nothing once torch is loaded)
        assert proc.stdout.splitlines()[-1].split() == ["0", "True", expected]


@pytest.mark.slow
def test_importing_the_library_changes_no_environment_variable():
    code = ("import os; before = dict(os.environ); import polyalign, polyalign.run, polyalign.inference.trained; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT,
                          check=True).stdout.strip() == "[]"
