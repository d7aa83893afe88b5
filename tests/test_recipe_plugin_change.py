"""An override that changes a node's plugin keeps only the options the new plugin takes, and says so."""

from __future__ import annotations

import warnings

import pytest
from conftest import RECIPES

import polyalign
from polyalign.core.errors import RecipeError

SYMILE = RECIPES / "xor-symile.yaml"


def test_changing_the_loss_plugin_drops_the_old_plugins_options_and_names_them():
    with pytest.warns(UserWarning, match=r"loss: plugin changed from 'symile' to 'clip'; .*\(negatives: "):
        recipe = polyalign.load_recipe(SYMILE, ["loss.plugin=clip"])
    assert recipe.losses[0].plugin == "clip"
    assert "negatives" not in recipe.losses[0].options()
    assert recipe.losses[0].options()["pairs"] == "full"  # the new plugin's own defaults


def test_options_the_new_plugin_shares_are_kept_and_ones_given_on_the_command_line_are_checked():
    with pytest.warns(UserWarning, match=r"\(negatives: \"n\"\)"):
        recipe = polyalign.load_recipe(SYMILE, ["loss={plugin: symile, negatives: n, temperature: 0.2}",
                                                "loss.plugin=clip"])
    assert recipe.losses[0].options()["temperature"] == pytest.approx(0.2)  # a LossConfig field clip takes too
    with pytest.raises(RecipeError, match="loss.negatives"):  # set on purpose: an error, not dropped
        polyalign.load_recipe(SYMILE, ["loss.plugin=clip", "loss.negatives=n"])


def test_a_list_node_and_an_unchanged_plugin():
    with pytest.warns(UserWarning, match=r"loss\.1: plugin changed from 'symile' to 'clip'"):
        recipe = polyalign.load_recipe(SYMILE, ["loss=[{plugin: clip}, {plugin: symile, negatives: n}]",
                                                "loss.1.plugin=clip"])
    assert [n.plugin for n in recipe.losses] == ["clip", "clip"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recipe = polyalign.load_recipe(SYMILE, ["loss.plugin=symile"])
    assert recipe.losses[0].options()["negatives"] == "n_squared"


def test_an_option_both_plugins_take_is_dropped_when_the_new_one_refuses_its_value():
    with pytest.warns(UserWarning, match=r"'gram' does not take, or not with that value \(negatives: \"n_squared\"\)"):
        recipe = polyalign.load_recipe(SYMILE, ["loss.plugin=gram"])
    assert recipe.losses[0].plugin == "gram" and recipe.losses[0].options()["negatives"] != "n_squared"
