"""A training step never waits for the device: metrics and NaN/Inf flags stay tensors until the
trainer's check (every ``log_every`` steps, at checkpoints and epoch ends); a non-finite step is
skipped on the device at once and reported, exactly numbered, at the next check."""

from __future__ import annotations

import json
import math
import traceback
from pathlib import Path

import pytest
import torch
from pydantic import Field

import polyalign
from polyalign.core.data import EpochSampler
from polyalign.core.plugin_manager import make_plugins
from polyalign.plugins.losses.clip import ClipConfig, ClipLoss
from polyalign.training.loop import Trainer
from polyalign.training.step import NonFiniteError

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "recipes" / "xor-clip.yaml"
# 16 steps of 16 rows in one epoch
TINY = ["data.n_train=256", "data.n_val=64", "data.n_test=64", "train.epochs=1", "train.warmup_steps=0",
        "train.batch_size=16", "modalities.a.encoder.hidden=[8]", "eval=[]"]


class NanAtConfig(ClipConfig):
    nan_at: list[int] = Field(default_factory=list, description="training calls (1-based) whose loss is NaN")


class NanAt(ClipLoss):
    def __init__(self, config: NanAtConfig):
        super().__init__(config)
        self.calls = 0

    def forward(self, embeddings, present=None):
        out = super().forward(embeddings, present)
        if self.training:
            self.calls += 1
            if self.calls in self.config.nan_at:
                out.loss = out.loss * math.nan
        return out


class Faults:
    @polyalign.hookimpl
    def register_losses(self, register):
        register("nan_at", NanAt, config=NanAtConfig, help="clip with NaN on chosen calls")


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("loss", ["{plugin: clip}", "{plugin: symile, negatives: n_squared}",
                                  "[{plugin: siglip}, {plugin: align_uniform, weight: 0.1}]"])
def test_no_value_is_read_back_from_the_device_between_checks(tmp_path, monkeypatch, loss):
    """No .item(), float() or .tolist() on a tensor between checks (the CPU stands in for CUDA)."""
    reads: list[str] = []
    allowed = [0]

    def counting(name):
        real = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if not allowed[0]:
                reads.append(f"{name} at {traceback.format_stack(limit=3)[0].strip()}")
            return real(self, *args, **kwargs)
        return read

    def allowing(method):
        def run(*args, **kwargs):
            allowed[0] += 1
            try:
                return method(*args, **kwargs)
            finally:
                allowed[0] -= 1
        return run

    for name in ("item", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    for name in ("_log", "validate", "save"):
        monkeypatch.setattr(Trainer, name, allowing(getattr(Trainer, name)))
    checks = []
    real_check = Trainer._check
    monkeypatch.setattr(Trainer, "_check", allowing(lambda self, w: checks.append(self.progress.step) or
                                                    real_check(self, w)))
    # once an epoch, on the host: the sampler's shuffle and the loader's worker seed
    monkeypatch.setattr(EpochSampler, "order", allowing(EpochSampler.order))
    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", allowing(torch.utils.data.DataLoader.__iter__))
    polyalign.train(XOR, out=tmp_path, overrides=TINY + [f"loss={loss}", "train.accumulate=2", "train.log_every=3"])
    assert checks == [3, 6, 8]  # 8 steps: a check at each log and at the epoch's end only
    assert not reads, reads[:5]


def test_a_bad_step_between_checks_stops_the_run_naming_it(tmp_path):
    with pytest.raises(NonFiniteError) as info:
        polyalign.train(XOR, out=tmp_path, overrides=TINY + ["loss={plugin: nan_at, nan_at: [2]}", "train.log_every=4"],
                        plugins=make_plugins(extra=[Faults()]))
    msg = str(info.value)
    assert msg.startswith("step 2: the loss is nan (terms: {'loss_a-b': ")
    assert "non-finite input values in: not checked (this step was found at a later check; " \
           "train.log_every=1 checks every step)" in msg
    assert "no checkpoint had been written yet" in msg


def test_skipped_steps_between_checks_are_renumbered_and_counted(tmp_path):
    run = polyalign.train(XOR, out=tmp_path, overrides=TINY + ["loss={plugin: nan_at, nan_at: [3, 6]}",
                                                               "train.log_every=4", "train.on_nan=skip"],
                          plugins=make_plugins(extra=[Faults()]))
    rows = [r for r in _rows(run) if r["kind"] == "step"]
    # nan_skipped is reported at the check that finds it, under the last good step's number
    assert [(r["step"], r.get("nan_skipped")) for r in rows] == [(2, 1.0), (4, None), (4, 2.0), (8, None), (12, None)]
    state = torch.load(run / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert state["step"] == 14 and state["nan_skips"] == 2
    assert state["scheduler"]["last_epoch"] == 14  # the schedule was rewound over the skipped steps
    assert state["optimizer"]["state"][0]["step"] == 14  # and the optimizer skipped them on the device


def test_a_skipped_update_leaves_weights_and_optimizer_state_as_they_were():
    from polyalign.training.step import step_unless

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.1, fused=True)
    for skip in (False, True, False):
        before = ({n: p.detach().clone() for n, p in layer.named_parameters()},
                  {k: v.clone() for k, v in optimizer.state[layer.weight].items()})
        layer.weight.grad, layer.bias.grad = torch.randn(3, 4), torch.full((3,), math.nan if skip else 1.0)
        step_unless(optimizer, torch.tensor(skip))
        same = all(torch.equal(p, before[0][n]) for n, p in layer.named_parameters())
        assert same == skip
        if skip:
            assert all(torch.equal(v, before[1][k]) for k, v in optimizer.state[layer.weight].items())
    assert int(optimizer.state[layer.weight]["step"]) == 2
