"""Numerical faults: NaN/Inf losses, embeddings, inputs and gradients stop the run with a message
naming the step, the loss terms and the modality (or are skipped up to a limit), and the last good
checkpoint is kept."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field

import polyalign
from polyalign import run as run_module
from polyalign.cli import main
from polyalign.core import recipe as recipe_module
from polyalign.core.errors import PolyalignError
from polyalign.core.loss import MIN_LOGIT_SCALE, Temperature, clamp_temperatures
from polyalign.core.plugin_manager import make_plugins
from polyalign.files.weights import load_state, load_weights
from polyalign.plugins.datasets.xor import XorConfig, XorDataset
from polyalign.plugins.encoders.vector import VectorConfig, VectorEncoder, load_vector
from polyalign.plugins.losses.clip import ClipConfig, ClipLoss
from polyalign.plugins.losses.symile import mip_multiplier
from polyalign.training.step import NonFiniteError

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "recipes" / "xor-clip.yaml"
# 8 steps per epoch, 16 in all
TINY = ["data.n_train=256", "data.n_val=64", "data.n_test=64", "train.batch_size=32", "train.epochs=2",
        "train.warmup_steps=0", "train.log_every=1", "train.checkpoint_every=2", "train.keep_last=1"]




class FaultyClipConfig(ClipConfig):
    nan_at: list[int] = Field(default_factory=list, description="training calls (1-based) whose loss is NaN")
    grad_nan_at: list[int] = Field(default_factory=list, description="calls whose gradient for 'a' is NaN")
    nan_in_eval: bool = False


class FaultyClip(ClipLoss):
    """CLIP that turns NaN on chosen training calls (or in validation)."""

    def __init__(self, config: FaultyClipConfig):
        super().__init__(config)
        self.calls = 0

    def forward(self, embeddings, present=None):
        out = super().forward(embeddings, present)
        if not self.training:
            if self.config.nan_in_eval:
                out.loss = out.loss * math.nan
            return out
        self.calls += 1
        if self.calls in self.config.nan_at:
            out.loss = out.loss * math.nan
        if self.calls in self.config.grad_nan_at:  # finite value, NaN gradient: d sqrt(x)/dx at 0 is inf
            out.loss = out.loss + torch.sqrt(embeddings["a"].sum() * 0.0)
        return out


class FaultyVectorConfig(VectorConfig):
    nan_at: list[int] = Field(default_factory=list, description="training calls whose features are NaN")


class FaultyVector(VectorEncoder):
    def __init__(self, config: FaultyVectorConfig, dim: int):
        super().__init__(dim, config.hidden)
        self.nan_at = config.nan_at
        self.calls = 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls in self.nan_at:
                return out * math.nan
        return out


class NanDataConfig(XorConfig):
    nan_row: int = 0


class NanData(XorDataset):
    """XOR with a NaN in modality c of one training row."""

    def __init__(self, config: NanDataConfig, seed: int):
        super().__init__(config, seed)
        self._splits["train"][config.nan_row]["c"] = self._splits["train"][config.nan_row]["c"].copy()
        self._splits["train"][config.nan_row]["c"][0] = math.nan


class Faults:
    @polyalign.hookimpl
    def register_losses(self, register):
        register("faulty_clip", FaultyClip, config=FaultyClipConfig, help="clip with NaN on chosen calls")

    @polyalign.hookimpl
    def register_encoders(self, register):
        register("faulty_vector", lambda cfg, example=None: FaultyVector(cfg, load_vector(example, None).numel()),
                 config=FaultyVectorConfig, help="vector with NaN features on chosen calls")

    @polyalign.hookimpl
    def register_datasets(self, register):
        register("nan_xor", NanData, config=NanDataConfig, help="xor with one NaN value")


@pytest.fixture(scope="module")
def plugins():
    return make_plugins(extra=[Faults()])


def _train(tmp_path, plugins, *overrides):
    return polyalign.train(XOR, out=tmp_path, overrides=TINY + list(overrides), plugins=plugins)


def _run(tmp_path) -> Path:
    (run,) = list(tmp_path.iterdir())
    return run


def _steps(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]


def test_nan_loss_stops_with_step_terms_and_keeps_last_checkpoint(tmp_path, plugins):
    with pytest.raises(NonFiniteError) as info:
        _train(tmp_path, plugins, "loss={plugin: faulty_clip, nan_at: [5]}")
    msg = str(info.value)
    run = _run(tmp_path)
    assert "step 5: the loss is nan" in msg
    assert "'loss_a-b':" in msg and "'loss_b-c':" in msg and "'logit_scale':" in msg  # the terms
    assert "non-finite embeddings in: none" in msg
    assert f"the last good checkpoint ({run / 'checkpoints' / 'last'}, step 4) is kept" in msg
    assert "train.on_nan=skip" in msg
    state = load_state(run / "checkpoints" / "last")
    assert state["step"] == 4
    weights = load_weights(run / "checkpoints" / "last")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert [r["step"] for r in _steps(run)] == [1, 2, 3, 4]


def test_nan_embeddings_name_the_modality(tmp_path, plugins):
    with pytest.raises(NonFiniteError) as info:
        _train(tmp_path, plugins, "modalities.b.encoder={plugin: faulty_vector, nan_at: [3]}")
    msg = str(info.value)
    assert "step 3: the loss is nan" in msg and "non-finite embeddings in: b;" in msg
    assert "non-finite input values in: none" in msg
    assert "step 2) is kept" in msg


def test_nan_input_data_names_the_modality(tmp_path, plugins):
    with pytest.raises(NonFiniteError) as info:
        _train(tmp_path, plugins, "data={plugin: nan_xor, n_train: 256, n_val: 64, n_test: 64, nan_row: 7}")
    msg = str(info.value)
    assert "non-finite embeddings in: c;" in msg and "non-finite input values in: c" in msg


def test_nan_gradient_names_parameters_and_modality(tmp_path, plugins):
    with pytest.raises(NonFiniteError) as info:
        _train(tmp_path, plugins, "loss={plugin: faulty_clip, grad_nan_at: [4]}")
    msg = str(info.value)
    assert "step 4: the gradient norm is nan" in msg
    assert "non-finite gradients in: model.heads.a.weight, model.heads.a.bias (modalities: a)" in msg
    assert "'loss_a-c':" in msg  # the loss terms of that step
    assert load_state(_run(tmp_path) / "checkpoints" / "last")["step"] == 2


def test_nan_in_validation_says_so(tmp_path, plugins):
    with pytest.raises(NonFiniteError, match=r"validation after step 8: the loss is nan"):
        _train(tmp_path, plugins, "loss={plugin: faulty_clip, nan_in_eval: true}")


def test_skip_drops_bad_steps_up_to_the_limit(tmp_path, plugins):
    run = _train(tmp_path, plugins, "loss={plugin: faulty_clip, nan_at: [3, 10], grad_nan_at: [6]}",
                 "train.on_nan=skip", "train.max_nan_skips=3")
    steps = _steps(run)
    assert [r["nan_skipped"] for r in steps if "nan_skipped" in r] == [1.0, 2.0, 3.0]
    assert [r["step"] for r in steps if "nan_skipped" not in r] == list(range(1, 14))  # 16 batches - 3
    state = load_state(run / "checkpoints" / "last")
    assert state["step"] == 13 and state["nan_skips"] == 3
    assert all(torch.isfinite(w).all() for w in load_weights(run / "checkpoints" / "last").values())
    assert (run / "eval" / "report.json").is_file()


def test_skip_limit_exceeded_stops(tmp_path, plugins):
    with pytest.raises(NonFiniteError) as info:
        _train(tmp_path, plugins, "loss={plugin: faulty_clip, nan_at: [2, 3, 5]}", "train.on_nan=skip",
               "train.max_nan_skips=2")
    msg = str(info.value)
    assert "step 3: the loss is nan" in msg  # the third bad batch; steps 1 and 2 were done
    assert "2 step(s) already skipped; train.max_nan_skips=2" in msg


def test_cli_prints_the_nan_message_without_traceback(tmp_path, plugins, monkeypatch, capsys):
    monkeypatch.setattr(recipe_module, "default_plugins", lambda: plugins)
    monkeypatch.setattr(run_module, "default_plugins", lambda: plugins)
    code = main(["train", str(XOR), *TINY, "loss={plugin: faulty_clip, nan_at: [5]}", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and "step 5: the loss is nan" in err and "is kept" in err


# ------------------------------------------------------------------ temperature bounds
@settings(max_examples=200, deadline=None)
@given(log_scale=st.floats(-1e30, 1e30, allow_nan=False), tau=st.floats(0.01, 1.0),
       shift=st.floats(0.0, 8.0))
def test_temperature_stays_within_its_bounds_whatever_the_optimizer_does(log_scale, tau, shift):
    """After clamping, 1/τ is in [min_scale, max_scale] (default [1, 100]) and τ as a metric is finite,
    for any value an optimizer step leaves in log(1/τ)."""
    for t in (Temperature(tau), Temperature(tau, min_scale=math.exp(-shift))):
        with torch.no_grad():
            t.log_scale.fill_(log_scale)
        t.clamp_()
        scale = float(t.scale)
        assert t.min_scale * (1 - 1e-6) <= scale <= t.max_scale * (1 + 1e-6)
        assert math.isfinite(t.tau) and t.tau == pytest.approx(1.0 / scale, rel=1e-5)


def test_an_initial_temperature_outside_the_bounds_is_refused(capsys):
    assert main(["validate", str(XOR), "loss.temperature=2"]) == 2
    assert "loss.temperature: Input should be less than or equal to 1" in capsys.readouterr().err
    with pytest.raises(PolyalignError, match=r"initial temperature τ = 0.001 is outside \[0.01, 1\]"):
        Temperature(0.001)


def test_symile_scale_dim_puts_the_floor_on_the_scaled_logits():
    loss = polyalign.build("loss", "symile", scale="dim", negatives="n_squared", modalities=["a", "b", "c"],
                           embed_dim=16)
    with torch.no_grad():
        loss.temperature.log_scale.fill_(-50.0)
    clamp_temperatures(loss)
    assert float(loss.temperature.scale) * mip_multiplier(16, 3) == pytest.approx(MIN_LOGIT_SCALE)


@pytest.mark.parametrize("loss", ["clip", "dcl", "siglip", "symile"])
def test_a_diverging_learning_rate_cannot_throw_the_temperature_out_of_bounds(loss, tmp_path):
    """train.lr=100 used to drive 1/τ to 0 (clip/dcl: ZeroDivisionError in a metric, also with on_nan: skip)
    or τ to 1.5e11 at lr=10; now the run ends and every logged temperature is within [0.01, 1]."""
    run = polyalign.train(XOR, out=tmp_path, overrides=TINY + [f"loss={{plugin: {loss}}}", "train.lr=100",
                                                                "train.on_nan=skip", "train.max_nan_skips=100"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    taus = [v for r in rows for k, v in r.items() if k.startswith("temperature")]
    assert taus and all(0.01 * (1 - 1e-6) <= t <= 1.0 * (1 + 1e-6) for t in taus), taus  # float32 exp
