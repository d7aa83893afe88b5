"""Plugins that misbehave: each gets an error naming the plugin and what it returned."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import torch
from pydantic import BaseModel

import polyalign
from polyalign import run as run_module
from polyalign.cli import main
from polyalign.core import recipe as recipe_module
from polyalign.core.errors import PluginError, PolyalignError
from polyalign.core.loss import LossOutput
from polyalign.core.plugin_manager import make_plugins
from polyalign.evaluation.evaluate import EvaluatorsFailed
from polyalign.plugins.encoders.vector import VectorConfig, VectorEncoder, load_vector
from polyalign.plugins.losses.clip import ClipConfig, ClipLoss

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "recipes" / "xor-clip.yaml"
TINY = ["data.n_train=128", "data.n_val=32", "data.n_test=32", "train.batch_size=32", "train.epochs=1"]




LossFault = Literal["vector", "tuple", "float", "int", "tensor_metric", "detached", "score_shape", "score_list",
                    "score_nan"]


class BadLossConfig(ClipConfig):
    fault: LossFault


class BadLoss(ClipLoss):
    def __init__(self, config: BadLossConfig):
        super().__init__(config)
        self.fault = config.fault

    def forward(self, embeddings, present=None):
        out = super().forward(embeddings, present)
        z = embeddings["a"]
        if self.fault == "vector":
            return LossOutput((z * z).sum(dim=1), out.metrics)  # per-sample losses, not reduced
        if self.fault == "tuple":
            return out.loss, out.metrics
        if self.fault == "float":
            return LossOutput(float(out.loss.detach()), out.metrics)
        if self.fault == "int":
            return LossOutput(torch.tensor(3), out.metrics)
        if self.fault == "tensor_metric":
            return LossOutput(out.loss, {**out.metrics, "norm": z.norm()})
        if self.fault == "detached":
            return LossOutput(out.loss.detach(), out.metrics)
        return out

    def score(self, queries, candidates, target):
        scores = super().score(queries, candidates, target)
        if self.fault == "score_shape":
            return scores.T
        if self.fault == "score_list":
            return scores.tolist()
        if self.fault == "score_nan":
            return scores * float("nan")
        return scores


EncoderFault = Literal["half_batch", "wrong_width", "three_dims", "integers", "tuple"]


class BadEncoderConfig(VectorConfig):
    fault: EncoderFault


class BadEncoder(VectorEncoder):
    def __init__(self, config: BadEncoderConfig, dim: int):
        super().__init__(dim, config.hidden)
        self.fault = config.fault

    def forward(self, x):
        h = super().forward(x)
        if self.fault == "half_batch":
            return h[: h.shape[0] // 2]
        if self.fault == "wrong_width":
            return torch.cat([h, h], dim=1)
        if self.fault == "three_dims":
            return h[:, None, :]
        if self.fault == "integers":
            return h.round().long()
        return (h,)


class Misbehaving:
    @polyalign.hookimpl
    def register_losses(self, register):
        register("bad_loss", BadLoss, config=BadLossConfig, help="a loss that breaks its contract")

    @polyalign.hookimpl
    def register_encoders(self, register):
        register("bad_encoder", lambda cfg, example=None: BadEncoder(cfg, load_vector(example, None).numel()),
                 config=BadEncoderConfig, help="an encoder that breaks its contract")


@pytest.fixture(scope="module")
def plugins():
    return make_plugins(extra=[Misbehaving()])


def _train(tmp_path, plugins, *overrides):
    return polyalign.train(XOR, out=tmp_path, overrides=TINY + list(overrides), plugins=plugins)


@pytest.mark.parametrize("fault, says", [
    ("vector", "returned a loss of shape (32,) (reduce it to a scalar"),
    ("tuple", "returned a tuple"),
    ("float", "returned a loss of type float"),
    ("int", "returned a loss of dtype torch.int64"),
    ("tensor_metric", "returned metric 'norm' = Tensor"),
    ("detached", "returned a loss that does not depend on the embeddings"),
])
def test_loss_breaking_forward_contract_is_named(fault, says, tmp_path, plugins):
    with pytest.raises(PluginError) as info:
        _train(tmp_path, plugins, f"loss={{plugin: bad_loss, fault: {fault}}}")
    assert "loss plugin 'bad_loss'" in str(info.value) and says in str(info.value)


def test_bad_term_of_a_weighted_loss_is_named(tmp_path, plugins):
    with pytest.raises(PluginError, match=r"loss plugin 'bad_loss' returned a loss of shape \(32,\)"):
        _train(tmp_path, plugins, "loss=[{plugin: clip}, {plugin: bad_loss, fault: vector, weight: 0.5}]")


@pytest.mark.parametrize("fault, says", [
    ("score_shape", "score() returned ("),  # transposed: (candidates, queries)
    ("score_list", "score() returned list"),
    ("score_nan", "score() returned NaN scores for target 'b'"),
])
def test_loss_breaking_score_contract_is_named(fault, says, tmp_path, plugins):
    with pytest.raises(EvaluatorsFailed) as info:  # 32 test queries against the distinct values of b (fewer)
        _train(tmp_path, plugins, f"loss={{plugin: bad_loss, fault: {fault}}}")
    msg = str(info.value)
    assert "loss plugin 'bad_loss'" in msg and says in msg
    if fault != "score_nan":
        assert "expected (32, " in msg and "(queries x candidates)" in msg


@pytest.mark.parametrize("fault, says", [
    ("half_batch", "returned (16, 5) torch.float32 for a batch of 32"),
    ("wrong_width", "returned (32, 10) torch.float32 for a batch of 32"),
    ("three_dims", "returned (32, 1, 5) torch.float32 for a batch of 32"),
    ("integers", "returned (32, 5) torch.int64 for a batch of 32"),
    ("tuple", "returned tuple for a batch of 32"),
])
def test_encoder_breaking_its_contract_is_named(fault, says, tmp_path, plugins):
    with pytest.raises(PluginError) as info:
        _train(tmp_path, plugins, f"modalities.b.encoder={{plugin: bad_encoder, fault: {fault}}}")
    msg = str(info.value)
    assert "encoder plugin 'bad_encoder' (modality 'b')" in msg and says in msg
    assert "floating (batch, width) tensor with width 5" in msg


def test_factory_that_crashes_is_named_with_its_recipe_path(tmp_path):
    class Crashing:
        @polyalign.hookimpl
        def register_encoders(self, register):
            def factory(config):
                raise KeyError("weights")
            register("crashing", factory, help="a factory that raises")

    with pytest.raises(PluginError, match=r"modalities.c.encoder: plugin 'crashing' failed to build: "
                                          r"KeyError: 'weights'"):
        _train(tmp_path, make_plugins(extra=[Crashing()]), "modalities.c.encoder={plugin: crashing}")


def test_cli_reports_a_misbehaving_plugin_without_traceback(tmp_path, plugins, monkeypatch, capsys):
    monkeypatch.setattr(recipe_module, "default_plugins", lambda: plugins)
    monkeypatch.setattr(run_module, "default_plugins", lambda: plugins)
    code = main(["train", str(XOR), *TINY, "modalities.a.encoder={plugin: bad_encoder, fault: half_batch}",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "encoder plugin 'bad_encoder' (modality 'a') returned (16, 5)" in err


class Loose(BaseModel):
    """A third-party config that neither forbids nor allows unknown keys (pydantic ignores them)."""

    depth: int = 2


def test_unknown_option_of_a_lenient_plugin_config_is_still_reported(tmp_path):
    class LoosePlugin:
        @polyalign.hookimpl
        def register_encoders(self, register):
            register("loose", lambda cfg, example=None: VectorEncoder(len(example), []), config=Loose)

    with pytest.raises(PolyalignError) as info:
        polyalign.load_recipe(XOR, ["modalities.a.encoder={plugin: loose, dpeth: 3}"],
                              plugins=make_plugins(extra=[LoosePlugin()]))
    assert "modalities.a.encoder.dpeth: unknown option for encoder 'loose'; its options are: depth" in str(info.value)


def test_every_registered_config_rejects_unknown_keys():
    from polyalign.core.plugin_manager import default_plugins

    registry = default_plugins().registry
    lenient = [f"{kind} {c.name}" for kind in ("encoder", "loss", "dataset", "evaluator", "logger")
               for c in registry.components(kind) if c.config.model_config.get("extra") != "forbid"]
    assert not lenient, f"these configs accept unknown keys silently: {lenient}"


class BadShapes:
    """Plugins whose factories or objects miss a part of their contract."""

    @polyalign.hookimpl
    def register_encoders(self, register):
        class NoWidth(VectorEncoder):
            def __init__(self, dim):
                super().__init__(dim, [])
                del self.width

        register("no_width", lambda cfg, example=None: NoWidth(load_vector(example, None).numel()))
        register("wants_rows", lambda cfg, rows: None)
        register("misspelt_context", lambda cfg, exmaple=None: None)

    @polyalign.hookimpl
    def register_losses(self, register):
        class Exploding(ClipLoss):
            def forward(self, embeddings, present=None):
                raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

        def needs_modalities(config, modalities):
            return ClipLoss(config)

        def broken_factory(config):
            raise ValueError("lambda must be positive")

        register("exploding", lambda cfg: Exploding(cfg), config=ClipConfig)
        register("needs_modalities", needs_modalities, config=ClipConfig)
        register("broken_factory", broken_factory)


@pytest.fixture(scope="module")
def bad_shapes():
    return make_plugins(extra=[BadShapes()])


def test_encoder_without_width_names_the_plugin_and_the_attribute(tmp_path, bad_shapes):
    with pytest.raises(PluginError, match=r"encoder plugin 'no_width' \(modality 'b'\): NoWidth has no attribute "
                                          r"`width`; set self.width to the size of its output features"):
        _train(tmp_path, bad_shapes, "modalities.b.encoder={plugin: no_width}")


def test_factory_asking_for_an_unknown_context_argument_lists_the_valid_ones(tmp_path, bad_shapes):
    with pytest.raises(PluginError) as info:
        _train(tmp_path, bad_shapes, "modalities.b.encoder={plugin: wants_rows}")
    assert ("modalities.b.encoder (wants_rows): encoder 'wants_rows' (plugin 'BadShapes'): its factory "
            "BadShapes.register_encoders.<locals>.<lambda> asks for 'rows', which polyalign does not provide. The "
            "context arguments of encoder factories are: modality, example, root (the first argument is the "
            "validated config)") == str(info.value)
    with pytest.raises(PluginError, match="asks for 'exmaple', which polyalign does not provide; did you mean "
                                          "'example'?"):
        _train(tmp_path, bad_shapes, "modalities.b.encoder={plugin: misspelt_context}")
    with pytest.raises(PluginError, match="needs the context argument 'modalities', which was not given; pass it "
                                          r"\(e.g. polyalign.build\('loss', 'needs_modalities', modalities=...\)\)"):
        bad_shapes.build("loss", "needs_modalities")


def test_failing_term_of_a_weighted_loss_names_that_term(tmp_path, bad_shapes):
    with pytest.raises(PluginError, match=r"loss term 'exploding' of the weighted sum clip \+ exploding failed: "
                                          r"RuntimeError: mat1 and mat2 shapes cannot be multiplied"):
        _train(tmp_path, bad_shapes, "loss=[{plugin: clip}, {plugin: exploding, weight: 0.5}]")
    with pytest.raises(PluginError, match=r"^loss.1: plugin 'broken_factory' failed to build: ValueError: lambda "
                                          r"must be positive"):
        _train(tmp_path, bad_shapes, "loss=[{plugin: clip}, {plugin: broken_factory, weight: 0.5}]")


def test_hook_name_close_to_a_real_one_gets_a_suggestion():
    class Typo:
        @polyalign.hookimpl
        def register_encoder(self, register):
            pass

    with pytest.raises(PluginError, match=r"plugin 'Typo': unknown hook 'register_encoder' in plugin .*; did you "
                                          r"mean register_encoders\?"):
        make_plugins(extra=[Typo()])
