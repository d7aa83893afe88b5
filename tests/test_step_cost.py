"""The estimated cost of one loss step against CLIP's: counts, the note before training, validate."""

from __future__ import annotations

from pathlib import Path

import pytest

import polyalign
from polyalign.cli import main
from polyalign.core.plugin_manager import default_plugins
from polyalign.core.step_cost import clip_flops, duration, estimate_step, measured_rate


def build(name: str, m: int, n: int, **config):
    names = [f"m{k}" for k in range(m)]
    context = {"modalities": names, "embed_dim": 64, "batch_size": n}
    return polyalign.build("loss", name, **config, **({"modalities": names} if name == "siglip" else {}),
                           **{k: v for k, v in context.items() if name in ("symile", "gram")})


def test_the_rate_is_measured_and_durations_read_well():
    rate = measured_rate(16, rows=64, budget=0.01)
    assert 1e6 < rate < 1e15
    assert [duration(s) for s in (0.0021, 5.5, 3000, 9000, 7e7)] == ["2.1 ms", "5.5 s", "50 min", "2.5 h",
                                                                    "810 days"]


@pytest.mark.parametrize("name", default_plugins().registry.names("loss"))
@pytest.mark.parametrize("m,n", [(3, 256), (6, 128), (8, 4096)])
def test_every_default_counts_its_step_and_only_n_squared_outgrows_clip(name, m, n):
    cost = estimate_step(build(name, m, n), n, 64, m, rate=1e9)
    assert cost is not None and cost.flops > 0
    assert cost.ratio <= 4 or (name == "symile" and m == 3 and n <= 256)  # auto keeps n_squared only there


def test_n_squared_counts_every_combination_and_is_slow_at_six_modalities():
    n_squared = estimate_step(build("symile", 6, 128, negatives="n_squared"), 128, 64, 6, rate=1e10)
    per_modality = estimate_step(build("symile", 6, 128, negatives="per_modality"), 128, 64, 6, rate=1e10)
    assert n_squared.flops == 128.0 ** 6 * (10 * 64 + 60) and n_squared.slow and n_squared.seconds > 86400
    assert per_modality.flops == pytest.approx(6 / 15 * clip_flops(128, 64, 6)) and not per_modality.slow


def test_validate_prints_the_estimate_and_a_note_when_slow(capsys):
    from conftest import RECIPES

    recipe = str(RECIPES / "digit-views.yaml")
    assert main(["validate", recipe]) == 0
    assert "step cost: one step of loss symile alone, encoders not counted (M = 6, batch 128, d = 64)" in capsys.readouterr().out
    assert main(["validate", recipe, "loss.negatives=n_squared"]) == 0
    shown = capsys.readouterr().out
    assert "note: one step of loss symile" in shown and "x a CLIP step on the same batch" in shown
    assert "negatives: per_modality" in shown


def test_train_says_so_before_the_first_step(tmp_path, tiny_xor, capsys):
    from conftest import RECIPES

    polyalign.train(RECIPES / "xor-symile.yaml", out=tmp_path, overrides=[*tiny_xor, "train.epochs=1"])
    err = capsys.readouterr().err
    assert "note: one step of loss symile alone, encoders not counted (M = 3, batch 64, d = 16)" in err


@pytest.mark.parametrize("loss,device,rows", [("symile", "cpu", 128), ("symile", "cuda", 8192), ("clip", "cpu", None)])
def test_the_rate_is_measured_where_it_matters_at_a_size_the_device_is_timed_by(monkeypatch, loss, device, rows):
    from polyalign.core import step_cost

    measured = []
    monkeypatch.setattr(step_cost, "measured_rate", lambda d, dev, rows: measured.append(rows) or 1e9)
    recipe = polyalign.load_recipe(Path(__file__).parents[1] / "polyalign" / "recipes" / "xor-symile.yaml",
                                   ["train.batch_size=128"])
    found = step_cost.recipe_step_cost(recipe, build(loss, 3, 128), device, only_slow=True)
    assert measured == ([rows] if rows else [])  # a CLIP step cannot be slow: nothing measured, no note
    assert (found is not None and found[0].slow) == (loss == "symile")
