"""Two CPU processes (gloo) match one process: every loss plugin's value and gradients, and a
whole torchrun training run writes one run directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import polyalign
from polyalign.core.plugin_manager import default_plugins
from polyalign.training.distributed import all_reduce_mean_grads, gather_batch
from polyalign.training.run_lock import lock_run_dir

MODALITIES = ["a", "b", "c"]
BATCH, DIM = 8, 6


def _inputs() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = {m: torch.randn(BATCH, DIM, generator=g, dtype=torch.float64) for m in MODALITIES}
    present = {m: torch.ones(BATCH, dtype=torch.bool) for m in MODALITIES}
    present["c"][[1, 6]] = False  # missing rows must be handled the same way in both layouts
    return x, present


def _setup(name: str):
    torch.manual_seed(0)
    heads = torch.nn.ModuleDict({m: torch.nn.Linear(DIM, 4).double() for m in MODALITIES})
    loss = polyalign.build("loss", name, modalities=MODALITIES).double()
    return heads, loss


def _step(heads, loss, x, present, rows=slice(None)):
    """Loss and (head + loss) gradients of one step on the given rows of the batch."""
    emb = {m: torch.nn.functional.normalize(heads[m](x[m][rows]), dim=-1) for m in MODALITIES}
    emb, pres = gather_batch(emb, {m: p[rows] for m, p in present.items()})
    torch.manual_seed(1)  # symile's sampled negatives: the same permutation in both layouts
    out = loss(emb, pres)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in [*heads.named_parameters(), *loss.named_parameters()]
                               if p.grad is not None}


def _worker(rank: int, world: int, init_file: str, names: list[str], result_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x, present = _inputs()
    share = BATCH // world
    # interleaved rows, like the trainer's sampler: the gathered batch is a permutation of the full one
    rows = torch.arange(rank, BATCH, world)
    assert len(rows) == share
    results = {}
    for name in names:
        heads, loss = _setup(name)
        value, _ = _step(heads, loss, x, present, rows)
        all_reduce_mean_grads(heads)  # what DDP does to the model's gradients
        all_reduce_mean_grads(loss)  # what the trainer does to the loss's own parameters
        results[name] = (value, {n: p.grad.clone() for n, p in [*heads.named_parameters(), *loss.named_parameters()]
                                 if p.grad is not None})
    torch.save(results, Path(result_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _loss_names() -> list[str]:
    return default_plugins().registry.names("loss")


def test_two_processes_equal_one_for_every_loss(tmp_path):
    names = _loss_names()
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), names, str(tmp_path)), nprocs=2, join=True)
    x, present = _inputs()
    perm = torch.cat([torch.arange(0, BATCH, 2), torch.arange(1, BATCH, 2)])  # the gathered row order
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name in names:
            heads, loss = _setup(name)
            want_value, want_grads = _step(heads, loss, x, present, perm)
            value, grads = got[name]
            torch.testing.assert_close(value, want_value, rtol=1e-10, atol=1e-12, msg=f"{name} loss")
            assert grads.keys() == want_grads.keys(), name
            for k in grads:
                torch.testing.assert_close(grads[k], want_grads[k], rtol=1e-9, atol=1e-12, msg=f"{name} grad {k}")


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_processes_train_one_run_directory(tmp_path, xor_clip, tiny_xor):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [torchrun, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "polyalign", "train", str(xor_clip),
           *tiny_xor, "--out", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
    assert (run / "eval" / "report.json").is_file()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "epoch"' in line for line in lines) == 2  # logged once, by rank 0


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_on_a_run_another_process_holds_is_refused_on_every_rank(tmp_path, xor_clip, tiny_xor):
    """Rank 0 owns the run directory's lock; when it cannot take it, every rank stops with its message."""
    run = polyalign.train(xor_clip, out=tmp_path, overrides=tiny_xor)
    before = (run / "metrics.jsonl").read_text()
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fd = lock_run_dir(run)
    try:
        res = subprocess.run([torchrun, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}",
                              "-m", "polyalign", "train", "--resume", str(run), "train.epochs=3"],
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=180,
                             check=False)
    finally:
        os.close(fd)
    assert res.returncode != 0
    said = (res.stdout + res.stderr).count(f"is in use by another polyalign process (pid {os.getpid()} on host")
    assert said == 2, res.stderr[-3000:]
    assert (run / "metrics.jsonl").read_text() == before
