"""``train.precision: fp16``: refused off CUDA; its gradient scaler path (run here on the CPU, where
torch.amp.GradScaler works too) gives the update of unscaled fp32, with window accumulation and
the loss's own parameters, and skips an overflowing step without counting it as a NaN step."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import polyalign
from polyalign.core.batch import Batch
from polyalign.core.errors import PolyalignError
from polyalign.core.model import MultiModalModel
from polyalign.plugins.encoders.vector import VectorEncoder
from polyalign.training.optim import build_optimizer
from polyalign.training.step import Stepper

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "recipes" / "xor-clip.yaml"
TINY = ["data.n_train=256", "data.n_val=64", "data.n_test=64", "train.epochs=1", "eval=[]"]


def test_fp16_on_cpu_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(PolyalignError, match=r"train.precision: fp16 trains on CUDA only .* Use bf16"):
        polyalign.train(XOR, out=tmp_path, overrides=TINY + ["train.precision=fp16", "train.device=cpu"])


def _stepper(scaler: torch.amp.GradScaler | None) -> Stepper:
    recipe = polyalign.load_recipe(XOR, ["train.accumulate=2", "loss={plugin: siglip}", "train.grad_clip=0.5"])
    torch.manual_seed(0)
    model = MultiModalModel({m: VectorEncoder(5, [8]) for m in "abc"}, 4)
    loss = polyalign.build("loss", "siglip", modalities=list("abc"))
    optimizer, scheduler = build_optimizer(model, loss, recipe, 10)
    return Stepper(recipe, model.train(), model, loss, optimizer, scheduler, torch.device("cpu"), scaler)


def _window(scale: float = 1.0) -> list[Batch]:
    g = torch.Generator().manual_seed(3)
    return [Batch({m: scale * torch.randn(6, 5, generator=g) for m in "abc"},
                  {m: torch.ones(6, dtype=torch.bool) for m in "abc"}, torch.arange(6)) for _ in range(2)]


def _state(stepper: Stepper) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in [*stepper.model.named_parameters(), *stepper.loss_fn.named_parameters()]}


def test_scaled_steps_update_as_unscaled_ones():
    plain, scaled = _stepper(None), _stepper(torch.amp.GradScaler("cpu", init_scale=2.0 ** 12))
    for _ in range(3):
        plain.step(_window())
        record = scaled.step(_window())
    assert not scaled.counts_as_bad(float(record.loss), float(record.grad_norm))
    want, got = _state(plain), _state(scaled)
    assert any("biases" in k for k in got)  # siglip's own bias and scale are updated too
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7, msg=k)


def test_an_overflowing_step_is_skipped_by_the_scaler_and_not_counted():
    stepper = _stepper(torch.amp.GradScaler("cpu", init_scale=2.0 ** 12))
    stepper.step(_window())
    before, scale = _state(stepper), stepper.scaler.get_scale()
    stepper.loss_fn.biases["a-b"].register_hook(lambda g: g * math.inf)  # the gradient overflows, the loss does not
    record = stepper.step(_window())
    assert math.isfinite(float(record.loss)) and not math.isfinite(float(record.grad_norm))
    assert not stepper.counts_as_bad(float(record.loss), float(record.grad_norm))  # the scaler's business
    assert stepper.scaler.get_scale() == scale / 2
    assert all(torch.equal(p, before[k]) for k, p in _state(stepper).items())
