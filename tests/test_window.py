"""Accumulation with full-window negatives (GradCache): K micro-batches with ``negatives: window``
give the loss and gradients of one batch of their K x B rows (float64, every loss plugin, missing
modalities dropped or filled with learned embeddings), with dropout and modality dropout
replayed, BatchNorm statistics updated once, in one process and with two (DDP over gloo)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import polyalign
from polyalign.core.batch import Batch
from polyalign.core.encoder import Encoder
from polyalign.core.model import MultiModalModel
from polyalign.core.plugin_manager import default_plugins
from polyalign.plugins.encoders.vector import VectorEncoder
from polyalign.training.distributed import all_reduce_mean_grads
from polyalign.training.step import Stepper, drop_modalities
from polyalign.training.window import micro_negatives, window_negatives

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "recipes" / "xor-clip.yaml"
MODALITIES = ["a", "b", "c"]
K, MICRO, DIM = 3, 4, 6  # a window of 3 micro-batches of 4 rows = one batch of 12
LOSSES = default_plugins().registry.names("loss")


def _batch(rows: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(rows, DIM, generator=g, dtype=torch.float64) for m in MODALITIES}
    present = {m: torch.ones(rows, dtype=torch.bool) for m in MODALITIES}
    present["c"][[1, 6, rows - 2]] = False  # holes in several micro-batches
    present["b"][4] = False
    return Batch(inputs, present, torch.arange(rows))


def _split(batch: Batch, size: int) -> list[Batch]:
    return [Batch({m: x[i:i + size] for m, x in batch.inputs.items()},
                  {m: p[i:i + size] for m, p in batch.present.items()}, batch.index[i:i + size])
            for i in range(0, len(batch), size)]


class NormEncoder(Encoder):
    """Linear -> BatchNorm -> dropout: running statistics and randomness in one encoder."""

    def __init__(self, dropout: float):
        super().__init__()
        self.width = 8
        self.net = nn.Sequential(nn.Linear(DIM, 8), nn.BatchNorm1d(8), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _loss(name: str, **config) -> nn.Module:
    return polyalign.build("loss", name, modalities=MODALITIES, **config).double()


def _model(missing: str = "drop", dropout: float = 0.0, norm: bool = False) -> MultiModalModel:
    torch.manual_seed(0)
    encoders = {m: NormEncoder(dropout) if norm else VectorEncoder(DIM, [8], dropout) for m in MODALITIES}
    return MultiModalModel(encoders, 5, "l2", missing).double().train()


def _stepper(model: nn.Module, loss: nn.Module, forward: nn.Module | None = None, *overrides: str) -> Stepper:
    recipe = polyalign.load_recipe(XOR, [f"train.accumulate={K}", *overrides])
    return Stepper(recipe, model, forward or model, loss, None, None, torch.device("cpu"))  # type: ignore[arg-type]


def _grads(*modules: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": p.grad.clone() for i, mod in enumerate(modules) for n, p in mod.named_parameters()
            if p.grad is not None}


def _one_batch(model: MultiModalModel, loss: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
    """The reference: one batch holding every row, straight through autograd."""
    emb = model(batch.inputs, batch.present)
    torch.manual_seed(1)  # symile's sampled negatives: the same draw in both computations
    out = loss(emb, model.loss_present(batch.present))
    out.loss.backward()
    return out.loss.detach(), _grads(model, loss)


def _assert_same(got: tuple[torch.Tensor, dict], want: tuple[torch.Tensor, dict], what: str) -> None:
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12, msg=f"{what}: loss")
    assert got[1].keys() == want[1].keys(), what
    for k in want[1]:
        torch.testing.assert_close(got[1][k], want[1][k], rtol=1e-10, atol=1e-12, msg=f"{what}: grad {k}")


@pytest.mark.parametrize("missing", ["drop", "learned"])
@pytest.mark.parametrize("name", LOSSES)
def test_window_equals_one_big_batch(name, missing):
    batch = _batch(K * MICRO)
    model, loss = _model(missing), _loss(name)
    want = _one_batch(model, loss, batch)
    model.zero_grad(), loss.zero_grad()
    torch.manual_seed(1)
    record = window_negatives(_stepper(model, loss), _split(batch, MICRO))
    _assert_same((record.loss, _grads(model, loss)), want, f"{name}, missing {missing}")
    if any(p.requires_grad for p in loss.parameters()):  # learned temperatures, biases: compared too
        assert any(k.startswith("1.") for k in want[1])


@pytest.mark.parametrize("name", ["clip", "symile"])
def test_window_replays_dropout_modality_dropout_and_keeps_batchnorm_statistics(name):
    """The reference runs each micro-batch once, with its graph, drawing the same random numbers."""
    rates = {"a": 0.3, "c": 0.2}
    micro = _split(_batch(K * 8), 8)
    loss = _loss(name, **({"negatives": "n"} if name == "symile" else {}))
    model = _model(dropout=0.3, norm=True)
    torch.manual_seed(5)
    embs, masks = [], []
    for b in micro:
        present = drop_modalities(b.present, rates)
        embs.append(model(b.inputs, present))
        masks.append(present)
    emb = {m: torch.cat([e[m] for e in embs]) for m in MODALITIES}
    present = {m: torch.cat([p[m] for p in masks]) for m in MODALITIES}
    out = loss(emb, present)
    out.loss.backward()
    want = (out.loss.detach(), _grads(model, loss))
    stats = {n: b.clone() for n, b in model.named_buffers()}
    assert any(not torch.equal(v, torch.zeros_like(v)) for n, v in stats.items() if "running_mean" in n)
    model, loss2 = _model(dropout=0.3, norm=True), _loss(name, **({"negatives": "n"} if name == "symile" else {}))
    torch.manual_seed(5)
    record = window_negatives(_stepper(model, loss2, None, "missing.train_rate={a: 0.3, c: 0.2}"), micro)
    _assert_same((record.loss, _grads(model, loss2)), want, name)
    for n, b in model.named_buffers():  # updated by one pass (the replay), as in the reference
        assert torch.equal(b, stats[n]), n


def test_micro_negatives_average_the_micro_batch_gradients():
    model, loss = _model(), _loss("clip")
    micro = _split(_batch(K * MICRO), MICRO)
    record = micro_negatives(_stepper(model, loss, None, "train.negatives=micro"), micro)
    got = _grads(model, loss)
    model.zero_grad(), loss.zero_grad()
    values = []
    for b in micro:
        out = loss(model(b.inputs, b.present), b.present)
        (out.loss / K).backward()
        values.append(out.loss.detach())
    _assert_same((record.loss, got), (torch.stack(values).mean(), _grads(model, loss)), "micro")


def _worker(rank: int, world: int, init_file: str, result_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    rows = K * MICRO  # per process: the global window is K x world micro-batches
    batch = _batch(rows * world)
    mine = _split(Batch({m: x[rank * rows:(rank + 1) * rows] for m, x in batch.inputs.items()},
                        {m: p[rank * rows:(rank + 1) * rows] for m, p in batch.present.items()},
                        batch.index[rank * rows:(rank + 1) * rows]), MICRO)
    results = {}
    for missing in ("drop", "learned"):
        for name in LOSSES:
            model, loss = _model(missing), _loss(name)
            ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
            torch.manual_seed(1)
            record = window_negatives(_stepper(model, loss, ddp), mine)
            all_reduce_mean_grads(loss)  # what the trainer's update does for the loss's own parameters
            results[f"{name}/{missing}"] = (record.loss, _grads(model, loss))
    torch.save(results, Path(result_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_processes_window_equals_one_big_batch(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    batch = _batch(2 * K * MICRO)  # rank 0's window, then rank 1's: the gathered row order
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for missing in ("drop", "learned"):
            for name in LOSSES:
                model, loss = _model(missing), _loss(name)
                _assert_same(got[f"{name}/{missing}"], _one_batch(model, loss, batch),
                             f"rank {rank}: {name}, missing {missing}")


TINY = ["data.n_train=256", "data.n_val=64", "data.n_test=64", "train.epochs=1", "train.warmup_steps=0",
        "train.log_every=1", "modalities.a.encoder.hidden=[8]", "modalities.b.encoder.hidden=[8]"]


def test_training_with_a_window_follows_training_with_one_big_batch(tmp_path):
    """The same steps in float32: 4 micro-batches of 16 with window negatives, or batches of 64."""
    from safetensors.torch import load_file

    window = polyalign.train(XOR, out=tmp_path / "w", overrides=TINY + ["train.batch_size=16", "train.accumulate=4"])
    big = polyalign.train(XOR, out=tmp_path / "b", overrides=TINY + ["train.batch_size=64"])
    micro = polyalign.train(XOR, out=tmp_path / "m", overrides=TINY + ["train.batch_size=16", "train.accumulate=4",
                                                                       "train.negatives=micro"])
    w, b, m = (load_file(str(r / "checkpoints" / "last" / "model.safetensors")) for r in (window, big, micro))
    for k in b:
        torch.testing.assert_close(w[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert any(not torch.allclose(m[k], b[k], rtol=1e-3, atol=1e-4) for k in b)  # micro negatives differ

