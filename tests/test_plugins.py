"""Plugin discovery, registration, duplicates, unknown names, POLYALIGN_PLUGINS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

import polyalign
from polyalign.core.encoder import Encoder
from polyalign.core.errors import PluginError
from polyalign.core.loss import Loss, LossConfig, LossOutput, Temperature
from polyalign.core.plugin_manager import make_plugins


class SquareConfig(BaseModel):
    width: int = 8


class SquareEncoder(Encoder):
    """Encodes x and x**2 through one linear layer (a new modality encoder for the test)."""

    def __init__(self, config: SquareConfig, example=None):
        super().__init__()
        dim = len(example)
        self.lin = torch.nn.Linear(2 * dim, config.width)
        self.width = config.width

    def load(self, value, root):
        return torch.as_tensor(value, dtype=torch.float32)

    def forward(self, x):
        return self.lin(torch.cat([x, x * x], dim=1))


class MeanPairLoss(Loss):
    """InfoNCE of every modality against the mean of the others (a new loss for the test)."""

    def __init__(self, config: LossConfig):
        super().__init__()
        self.temperature = Temperature(config.temperature)
        self.calls = 0

    def forward(self, embeddings, present=None):
        self.calls += 1
        names = list(embeddings)
        total = 0.0
        for m in names:
            rest = torch.stack([embeddings[n] for n in names if n != m]).mean(0)
            logits = self.temperature.scale * embeddings[m] @ rest.T
            total = total + torch.nn.functional.cross_entropy(logits, torch.arange(len(logits)))
        return LossOutput(total / len(names), {"calls": float(self.calls)})

    def score(self, queries, candidates, target):
        return sum(q @ candidates.T for q in queries.values())


class TestPlugin:
    @polyalign.hookimpl
    def register_encoders(self, register):
        register("square", SquareEncoder, config=SquareConfig, help="x and x squared, linear")

    @polyalign.hookimpl
    def register_losses(self, register):
        register("mean_pair", lambda cfg: MeanPairLoss(cfg), config=LossConfig, help="each vs mean of the rest")


def test_plugin_in_test_module_adds_encoder_and_loss_that_train(tmp_path, xor_clip, tiny_xor):
    plugins = make_plugins(extra=[TestPlugin()])
    assert "square" in plugins.registry.names("encoder")
    assert "mean_pair" in plugins.registry.names("loss")
    recipe = polyalign.load_recipe(xor_clip, tiny_xor + ["modalities.a.encoder={plugin: square, width: 12}",
                                                         "loss={plugin: mean_pair}"], plugins=plugins)
    run = polyalign.train(recipe, out=tmp_path, plugins=plugins)
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(row.get("calls", 0) > 0 for row in steps), "the plugin loss was not the one trained"
    assert (run / "eval" / "report.json").is_file()


def test_duplicate_name_names_both_plugins():
    class Again:
        @polyalign.hookimpl
        def register_losses(self, register):
            register("clip", lambda cfg: None, help="a second clip")

    with pytest.raises(PluginError) as info:
        make_plugins(extra=[Again()])
    msg = str(info.value)
    assert "'clip'" in msg and "'polyalign:losses'" in msg and "'Again'" in msg


def test_unknown_name_lists_available_and_closest():
    with pytest.raises(PluginError) as info:
        polyalign.build("loss", "clpi")
    msg = str(info.value)
    assert "did you mean 'clip'" in msg and "Available:" in msg


def test_build_returns_component_with_defaults():
    loss = polyalign.build("loss", "clip")
    assert abs(float(1 / loss.temperature.scale.detach()) - 0.07) < 1e-6
    loss2 = polyalign.build("loss", "clip", temperature=0.5)
    assert abs(float(1 / loss2.temperature.scale.detach()) - 0.5) < 1e-6


def _fake_distribution(root: Path, dist: str, module: str, body: str) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[polyalign]\n{dist} = {module}\n")


def _plugins_json(env_extra: dict[str, str]) -> dict:
    env = {**os.environ, **env_extra}
    res = subprocess.run([sys.executable, "-m", "polyalign", "plugins", "--json"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_entry_point_plugin_is_discovered_and_can_be_switched_off(tmp_path):
    _fake_distribution(tmp_path, "polyalign-cubes", "polyalign_cubes", """
        import polyalign

        @polyalign.hookimpl
        def register_losses(register):
            from polyalign.plugins.losses.clip import ClipConfig, build_clip
            register("cubes", build_clip, config=ClipConfig, help="clip under another name")
    """)
    _fake_distribution(tmp_path, "polyalign-broken", "polyalign_broken", "raise ImportError('no such lib')\n")
    _fake_distribution(tmp_path, "polyalign-typo", "polyalign_typo", """
        import polyalign

        @polyalign.hookimpl
        def register_encoder(register):
            pass
    """)
    listing = _plugins_json({"PYTHONPATH": str(tmp_path)})
    by_dist = {p["distribution"]: p for p in listing["plugins"]}
    assert by_dist["polyalign-typo"]["error"].startswith("not loaded: unknown hook 'register_encoder'")
    assert by_dist["polyalign-typo"]["error"].endswith("; did you mean register_encoders?")
    assert by_dist["polyalign-cubes"]["version"] == "0.3" and by_dist["polyalign-cubes"]["error"] is None
    assert "cubes" in [c["name"] for c in listing["losses"]]
    assert "no such lib" in by_dist["polyalign-broken"]["error"]  # reported, others still load
    for name in ("vector", "clip"):
        assert name in [c["name"] for c in listing["encoders"] + listing["losses"]]
    off = _plugins_json({"PYTHONPATH": str(tmp_path), "POLYALIGN_PLUGINS": ""})
    assert "cubes" not in [c["name"] for c in off["losses"]]
    assert "clip" in [c["name"] for c in off["losses"]]  # built-ins always load
    only = _plugins_json({"PYTHONPATH": str(tmp_path), "POLYALIGN_PLUGINS": "polyalign-cubes"})
    assert "cubes" in [c["name"] for c in only["losses"]]
    assert "polyalign-broken" not in {p["distribution"] for p in only["plugins"]}
