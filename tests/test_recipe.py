"""Recipe validation: every error at once, each with its YAML path; overrides; the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import polyalign
from polyalign.core.errors import RecipeError
from polyalign.core.overrides import apply_overrides
from polyalign.core.recipe import validate_recipe


def _raw(xor_clip):
    return yaml.safe_load(xor_clip.read_text())


def test_shipped_recipe_validates_and_fills_defaults(xor_clip):
    recipe = polyalign.load_recipe(xor_clip)
    assert recipe.losses[0].options()["temperature"] == 0.07
    assert recipe.modalities["a"].encoder.options()["hidden"] == []


def test_misspelt_plugin_suggests_the_right_one(xor_clip):
    raw = _raw(xor_clip)
    raw["loss"]["plugin"] = "clpi"
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    assert info.value.problems[0][0] == "loss.plugin"
    assert "did you mean 'clip'" in info.value.problems[0][1]


def test_wrong_type_deep_in_plugin_config_names_yaml_path(xor_clip):
    raw = _raw(xor_clip)
    raw["modalities"]["b"]["encoder"]["hidden"] = ["wide"]
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    assert ("modalities.b.encoder.hidden.0", "Input should be a valid integer, unable to parse string as an integer") \
        in info.value.problems


def test_several_errors_are_reported_at_once(xor_clip):
    raw = _raw(xor_clip)
    raw["train"]["batch_size"] = -3
    raw["data"]["d_v"] = "five"
    raw["loss"]["tempreature"] = 0.1
    raw["eval"][0]["target"] = "z"
    raw["model"]["normalize"] = "l3"
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    paths = {p for p, _ in info.value.problems}
    assert {"train.batch_size", "data.d_v", "loss.tempreature", "model.normalize"} <= paths
    text = str(info.value)
    assert "Extra inputs are not permitted" in text and "greater than or equal to 1" in text
    assert "loss.tempreature: Extra inputs are not permitted; did you mean 'temperature'?" in text


def test_cross_checks_after_schema(xor_clip):
    raw = _raw(xor_clip)
    raw["eval"][0]["target"] = "z"
    raw["missing"] = {"train_rate": {"q": 0.5}}
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    assert {p for p, _ in info.value.problems} == {"eval.0.target", "missing.train_rate.q"}


def test_overrides_parse_yaml_and_index_lists(xor_clip):
    raw = apply_overrides(_raw(xor_clip), ["train.lr=0.5", "eval.0.target=a", "loss={plugin: clip, pairs: star}",
                                           "train.new.deep=1"])
    assert raw["train"]["lr"] == 0.5 and raw["eval"][0]["target"] == "a"
    assert raw["loss"] == {"plugin": "clip", "pairs": "star"}
    assert raw["train"]["new"] == {"deep": 1}
    with pytest.raises(RecipeError):
        apply_overrides(_raw(xor_clip), ["eval.7.target=a"])
    with pytest.raises(RecipeError):
        apply_overrides(_raw(xor_clip), ["nokey"])


def test_weighted_loss_list(xor_clip):
    recipe = polyalign.load_recipe(xor_clip, ["loss=[{plugin: clip, weight: 0.5}, {plugin: clip, pairs: star, weight: 2}]"])
    assert [n.weight for n in recipe.losses] == [0.5, 2.0]


@pytest.mark.slow
def test_cli_bad_recipe_prints_message_not_traceback(tmp_path, xor_clip):
    bad = tmp_path / "bad.yaml"
    bad.write_text(xor_clip.read_text().replace("plugin: clip", "plugin: clipp").replace("d_v: 5", "d_v: many"))
    res = subprocess.run([sys.executable, "-m", "polyalign", "validate", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "loss.plugin" in res.stderr and "did you mean 'clip'" in res.stderr and "data.d_v" in res.stderr
    ok = subprocess.run([sys.executable, "-m", "polyalign", "validate", str(xor_clip), "train.lr=0.1"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "valid" in ok.stdout


@pytest.mark.parametrize("section, value, expected", [
    ("loss", 3, [("loss", "must be a plugin node {plugin: NAME, ...} or a list of them")]),
    ("loss", {"plugin": "clip", "weight": -1}, [("loss.weight", "Input should be greater than or equal to 0")]),
    ("loss", [{"plugin": "clip"}, {"weight": 2}], [("loss.1.plugin", "Field required")]),
    ("logging", ["jsonl", 3],
     [("logging.1", "a logger is a name (jsonl) or a plugin node {plugin: NAME, ...options}")]),
    ("logging", [{"plugn": "csv"}], [("logging.0.plugin", "Field required")])])
def test_each_form_of_loss_and_logging_reports_only_its_own_errors(xor_clip, section, value, expected):
    raw = _raw(xor_clip)
    raw[section] = value
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    assert info.value.problems == expected
