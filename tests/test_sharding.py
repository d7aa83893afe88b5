"""``train.strategy: fsdp`` on two CPU processes (gloo): FSDP2 gives the loss, gradients and
update of DDP; its checkpoints (a full state dict gathered on rank 0) resume bit-identically."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn

import polyalign
from polyalign.core.batch import Batch
from polyalign.core.model import MultiModalModel
from polyalign.plugins.encoders.vector import VectorEncoder
from polyalign.training.distributed import all_reduce_mean_grads
from polyalign.training.optim import build_optimizer
from polyalign.training.sharding import ShardedParts
from polyalign.training.step import Stepper
from polyalign.training.window import window_negatives

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "recipes" / "xor-clip.yaml"
MODALITIES = ["a", "b", "c"]
MICRO, DIM = 4, 6


def _model(missing: str) -> MultiModalModel:
    torch.manual_seed(0)
    return MultiModalModel({m: VectorEncoder(DIM, [8]) for m in MODALITIES}, 5, "l2", missing).double()


def _window(rank: int) -> list[Batch]:
    """This process's two micro-batches, with holes."""
    g = torch.Generator().manual_seed(rank)
    out = []
    for _ in range(2):
        present = {m: torch.ones(MICRO, dtype=torch.bool) for m in MODALITIES}
        present["c"][1] = False
        out.append(Batch({m: torch.randn(MICRO, DIM, generator=g, dtype=torch.float64) for m in MODALITIES},
                         present, torch.arange(MICRO)))
    return out


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _compare(rank: int, world: int, init_file: str, result_dir: str) -> None:
    """DDP and FSDP side by side on the same windows: loss, gradients and one update, per loss."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results = {}
    for name, missing in (("clip", "drop"), ("symile", "learned"), ("siglip", "drop")):
        recipe = polyalign.load_recipe(XOR, ["train.accumulate=2", f"loss={{plugin: {name}}}", "train.lr=0.01"])
        for strategy in ("ddp", "fsdp"):
            model = _model(missing)
            loss = polyalign.build("loss", name, modalities=MODALITIES).double()
            if strategy == "fsdp":
                ShardedParts(model, loss, torch.device("cpu"), world)
                forward: nn.Module = model
            else:
                forward = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
            optimizer, scheduler = build_optimizer(model, loss, recipe, 10)
            stepper = Stepper(recipe, model, forward, loss, optimizer, scheduler, torch.device("cpu"))
            torch.manual_seed(1)
            record = window_negatives(stepper, _window(rank))
            all_reduce_mean_grads(loss)
            grads = {n: _full(p.grad).clone() for n, p in [*model.named_parameters(), *loss.named_parameters()]
                     if p.grad is not None}
            stepper.update(record)
            params = {n: _full(p.detach()).clone() for n, p in [*model.named_parameters(), *loss.named_parameters()]}
            results[f"{name}/{strategy}"] = (record.loss, grads, params)
    torch.save(results, Path(result_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_fsdp_gives_the_loss_gradients_and_update_of_ddp(two_processes):
    for rank in (0, 1):
        got = torch.load(two_processes / f"rank{rank}.pt", weights_only=True)
        for name in ("clip", "symile", "siglip"):
            (loss_d, grads_d, params_d), (loss_f, grads_f, params_f) = got[f"{name}/ddp"], got[f"{name}/fsdp"]
            torch.testing.assert_close(loss_f, loss_d, rtol=1e-10, atol=1e-12, msg=name)
            assert grads_f.keys() == grads_d.keys()
            for k in grads_d:
                torch.testing.assert_close(grads_f[k], grads_d[k], rtol=1e-10, atol=1e-12, msg=f"{name} grad {k}")
                torch.testing.assert_close(params_f[k], params_d[k], rtol=1e-10, atol=1e-12, msg=f"{name} param {k}")
            assert all(bool(g.abs().sum() > 0) for g in grads_d.values()), name  # every part gets a gradient


TINY = ["data.n_train=256", "data.n_val=64", "data.n_test=64", "train.batch_size=32", "train.warmup_steps=0",
        "train.schedule=constant", "train.log_every=2", "train.accumulate=2", "modalities.a.encoder.hidden=[8]",
        "missing.train_rate={b: 0.2}"]


def _train(rank: int, world: int, ports: list[int], out: str) -> None:
    """Runs, in order: fsdp for 2 epochs; fsdp for 1 epoch, resumed to 2; ddp for 2 epochs."""
    os.environ.update({"WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1"})
    runs = {}
    for i, (key, epochs, strategy) in enumerate([("full", 2, "fsdp"), ("cut", 1, "fsdp"), ("ddp", 2, "ddp")]):
        os.environ["MASTER_PORT"] = str(ports[i])
        runs[key] = polyalign.train(XOR, out=Path(out) / key, overrides=TINY + [
            f"train.epochs={epochs}", f"train.strategy={strategy}", *(["eval=[]"] if key != "full" else [])])
    os.environ["MASTER_PORT"] = str(ports[3])
    polyalign.train(None, resume=runs["cut"], overrides=["train.epochs=2"])


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rows]


def _worker(rank: int, world: int, out: str, ports: list[int]) -> None:
    torch.set_num_threads(1)
    _compare(rank, world, str(Path(out) / "store"), out)
    _train(rank, world, ports, out)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    """One pair of processes for both tests (starting them is the slow part)."""
    out = tmp_path_factory.mktemp("fsdp")
    mp.spawn(_worker, args=(2, str(out), _free_ports(4)), nprocs=2, join=True)
    return out


def test_fsdp_training_resumes_exactly_and_follows_ddp(two_processes):
    full, cut, ddp = (next((two_processes / k).iterdir()) for k in ("full", "cut", "ddp"))
    weights = {k: load_file(str(r / "checkpoints" / "last" / "model.safetensors")) for k, r in
               (("full", full), ("cut", cut), ("ddp", ddp))}
    assert weights["full"].keys() == weights["ddp"].keys()
    for k in weights["full"]:
        assert torch.equal(weights["cut"][k], weights["full"][k]), k  # resumed: bit-identical
        torch.testing.assert_close(weights["full"][k], weights["ddp"][k], rtol=1e-4, atol=1e-6, msg=k)
    assert _rows(cut) == _rows(full)
    assert (full / "eval" / "report.json").is_file()
    state = torch.load(full / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert "model.heads.a.weight" in state["optimizer"]["state"]  # full optimizer state, keyed by name
