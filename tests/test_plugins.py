"""Plugin discovery, registration, duplicates, unknown names, POLYALIGN_PLUGINS."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

import polyalign
from polyalign.core.plugin_manager import make_plugins
from polyalign.plugin import Encoder, Loss, LossConfig, LossOutput, PluginError, Temperature


class SquareConfig(BaseModel):
    width: int = 8


class SquareEncoder(Encoder):
    """x and x squared, linear

    Encodes x and x**2 through one linear layer (a new modality encoder for the test)."""

    name = "square"
    Options = SquareConfig

    def __init__(self, config: SquareConfig, example=None):
        super().__init__()
        dim = len(example)
        self.lin = torch.nn.Linear(2 * dim, config.width)
        self.width = config.width

    def decode(self, value, root):
        return torch.as_tensor(value, dtype=torch.float32)

    def forward(self, x):
        return self.lin(torch.cat([x, x * x], dim=1))


class MeanPairLoss(Loss):
    """InfoNCE of every modality against the mean of the others (a new loss for the test)."""

    name = "mean_pair"
    Options = LossConfig

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

    def score_tuples(self, queries, candidates):
        return sum(q @ c.T for q in queries.values() for c in candidates.values())


class TestPlugin:
    @polyalign.hookimpl
    def register_encoders(self, register):
        register(SquareEncoder)

    @polyalign.hookimpl
    def register_losses(self, register):
        register(MeanPairLoss)


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
            register(type("SecondClip", (), {"name": "clip"}))

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


@pytest.mark.slow
def test_entry_point_plugin_is_discovered_and_can_be_switched_off(tmp_path):
    _fake_distribution(tmp_path, "polyalign-cubes", "polyalign_cubes", """
        import polyalign

        @polyalign.hookimpl
        def register_losses(register):
            from polyalign.plugins.losses.clip import ClipLoss

            class Cubes(ClipLoss):
                name = "cubes"  # clip under another name

            register(Cubes)
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


def _registering(*components):
    class Registers:
        @polyalign.hookimpl
        def register_losses(self, register):
            for c in components:
                register(c)

    return Registers()


def test_the_class_carries_name_options_description_and_requires():
    class Needy(MeanPairLoss):
        """Mean pair with a need.

        The rest of the docstring is not the description."""

        name = "needy"
        requires = {"polyalign_no_such_module": "polyalign-no-such-pkg"}

    comp = make_plugins(extra=[_registering(Needy)]).registry.get("loss", "needy")
    assert (comp.cls, comp.config, comp.description) == (Needy, LossConfig, "Mean pair with a need.")
    assert comp.requirements(comp.make_config({})) == {"polyalign_no_such_module": "polyalign-no-such-pkg"}
    loss = comp.create(comp.make_config({"temperature": 0.5}), modalities=["a", "b"], embed_dim=4)
    assert isinstance(loss, Needy) and abs(float(1 / loss.temperature.scale.detach()) - 0.5) < 1e-6


def test_requires_for_reads_the_options():
    comp = make_plugins().registry.get("encoder", "image")
    assert comp.requirements(comp.make_config({"pretrained": False})) == {}
    assert comp.requirements(comp.make_config({"pretrained": False, "lora": {}})) == {"peft": "polyalign[lora]"}


def test_a_class_without_options_is_called_with_its_context_only(tmp_path):
    class Quiet:
        """Writes nothing."""

        name = "quiet"

        def __init__(self, run_dir):
            self.run_dir = run_dir

    class Registers:
        @polyalign.hookimpl
        def register_loggers(self, register):
            register(Quiet)

    plugins = make_plugins(extra=[Registers()])
    assert plugins.build("logger", "quiet", {"run_dir": tmp_path}).run_dir == tmp_path
    with pytest.raises(Exception, match="extra"):  # no Options: any option is refused
        plugins.build("logger", "quiet", {"run_dir": tmp_path}, level=3)


@pytest.mark.parametrize("registered, expected", [
    (lambda cfg: None, r"registered <function .*>.* which is not a class\. The form is register\(MyClass\)"),
    (type("Nameless", (), {"__doc__": "no name"}), r"loss class Nameless has no name; add the class attribute name"),
    (type("BadOptions", (), {"name": "bad", "Options": dict}), r"Options must be a pydantic BaseModel subclass"),
    (type("BadNeeds", (), {"name": "bad", "requires": ["sklearn"]}), r"requires must map module names to what to pip"),
    (type("NoRoom", (), {"name": "bad", "Options": LossConfig}), r"declares Options but its __init__ takes no "),
])
def test_registering_something_that_is_not_a_component_class_says_what_to_add(registered, expected):
    with pytest.raises(PluginError, match=expected):
        make_plugins(extra=[_registering(registered)])


def test_the_old_register_form_is_an_error_naming_the_new_one():
    class Old:
        @polyalign.hookimpl
        def register_losses(self, register):
            register("old", MeanPairLoss, config=LossConfig, help="the 0.x form")

    with pytest.raises(PluginError, match=r"register_losses called register\(\) with 2 argument\(s\) and config, help; "
                                          r"it takes one class: register\(MyClass\)"):
        make_plugins(extra=[Old()])


def test_the_public_plugin_module_gives_every_name_it_lists():
    import polyalign.plugin as api

    missing = [name for name in api.__all__ if getattr(api, name, None) is None]
    assert not missing and len(set(api.__all__)) == len(api.__all__)
    assert api.hookimpl is polyalign.hookimpl and api.check_loss is polyalign.testing.check_loss


def test_each_name_of_the_plugin_module_is_documented_once_and_its_stability_stated():
    import polyalign.plugin as api

    docs = Path(__file__).resolve().parents[1] / "docs"
    rows = re.findall(r"^\| `(\w+)` \|", (docs / "api.md").read_text(), flags=re.M)
    assert sorted(rows) == sorted(api.__all__)  # every name once, nothing else
    guide = (docs / "writing-a-plugin.md").read_text()
    for text in (api.__doc__, guide):
        assert "DeprecationWarning" in text and "at least one minor release" in text and "__all__" in text
