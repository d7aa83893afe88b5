"""The fit check: whether a valid recipe fits this machine is asked apart from whether it is valid."""

from __future__ import annotations

import pytest
from conftest import RECIPES

import polyalign
from polyalign.cli import main
from polyalign.core import memory
from polyalign.core.assemble import build_loss
from polyalign.core.machine_fit import DoesNotFit, memory_needs
from polyalign.core.plugin_manager import default_plugins
from polyalign.plugins.losses.symile import SymileConfig

XOR = RECIPES / "xor-clip.yaml"
LOW, HIGH = 64 * 1024, 1 << 40


def _memory(monkeypatch, n: int) -> None:
    monkeypatch.setattr(memory, "physical_memory", lambda: n)


def test_a_recipe_is_valid_whatever_the_memory_of_the_machine_that_validates_it(monkeypatch, tiny_xor):
    four = "modalities={" + ", ".join(f"{m}: {{encoder: {{plugin: vector}}}}" for m in "abcd") + "}"
    overrides = [*tiny_xor, four, "loss={plugin: symile, negatives: n_squared}", "eval=[]"]
    _memory(monkeypatch, LOW)
    low = polyalign.load_recipe(XOR, overrides)
    _memory(monkeypatch, HIGH)
    high = polyalign.load_recipe(XOR, overrides)
    assert low.to_yaml() == high.to_yaml() and low.losses[0].options()["negatives"] == "n_squared"


def test_training_under_a_low_limit_is_refused_with_the_estimate_and_what_to_change(monkeypatch, tiny_xor, tmp_path):
    _memory(monkeypatch, LOW)
    with pytest.raises(DoesNotFit) as info:
        polyalign.train(XOR, out=tmp_path, overrides=tiny_xor)
    paths = [path for path, _ in info.value.problems]
    assert paths == ["data"]  # 768 tuples x 1200 bytes = 900 KiB; the heads need 34 KiB and fit
    text = str(info.value)
    assert "768 tuples generated in memory x 1200 bytes: at least 900 KiB of memory, and this machine has 64 KiB; " \
           "lower n_train, n_val or n_test" in text
    assert "is valid but does not fit this machine (pass --force" in text
    assert not tmp_path.exists() or not list(tmp_path.iterdir())  # refused before a run directory


def test_force_trains_anyway_and_says_so(monkeypatch, tiny_xor, tmp_path, capsys):
    _memory(monkeypatch, LOW)
    run_dir = polyalign.train(XOR, out=tmp_path, overrides=[*tiny_xor, "train.epochs=1"], force=True)
    assert (run_dir / "metrics.jsonl").is_file()
    assert "warning: does not fit this machine, training anyway (force): data: 768 tuples" in capsys.readouterr().err


@pytest.mark.parametrize("have, shown", [
    (LOW, "memory: does not fit (train refuses it; --force trains anyway): data: 768 tuples generated in memory"),
    (HIGH, "memory: fits (the largest need known before any step, data, is 900 KiB; this machine has 1 TiB)")])
def test_validate_prints_the_fit_apart_from_validity(monkeypatch, tiny_xor, capsys, have, shown):
    _memory(monkeypatch, have)
    assert main(["validate", str(XOR), *tiny_xor]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("xor-clip.yaml: valid (3 modalities, loss clip, data xor)")
    assert lines[1] == "on this machine (apart from validity):"
    assert lines[2] == f"  {shown}" or lines[2].startswith(f"  {shown}")


def test_symile_n_squared_counts_its_log_sum_exps_per_combination():
    config = SymileConfig(negatives="n_squared")
    need = config.memory_need({"modalities": list("abcde"), "batch_size": 10})
    assert need.bytes == 4.0 * 10 ** 3 and "10^3 = 1e+03 log-sum-exps" in need.counted
    assert config.memory_need({"modalities": list("abc"), "batch_size": 10}) is None  # M = 3: N^1 numbers
    assert SymileConfig(negatives="n").memory_need({"modalities": list("abcde"), "batch_size": 10}) is None


def test_validators_and_loss_factories_see_one_context(tiny_xor):
    recipe = polyalign.load_recipe(RECIPES / "xor-symile.yaml", [*tiny_xor, "train.accumulate=2"])
    context = recipe.plugin_context()
    assert context == {"modalities": ["a", "b", "c"], "embed_dim": recipe.model.embed_dim, "batch_size": 128}
    assert build_loss(recipe, default_plugins()).shape == (3, 128)  # the rows of one loss call: 2 x 64
    assert [path for path, _ in memory_needs(recipe, default_plugins())] == ["model.embed_dim", "data"]
