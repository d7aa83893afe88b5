"""A configuration's headline (the mean of chosen evaluation rows, bootstrap interval over seeds and tuples) and
paired tests of two sweep configurations named by their grid values."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.evaluation.compare import load_run
from polyalign.evaluation.headline import chosen_rows, config_headline, paired_headline, parse_pattern
from polyalign.sweep.grid_values import configuration
from polyalign.sweep.plan import new_plan, slot_dir, write_plan

ROOT = Path(__file__).resolve().parents[1]
N = 100  # test tuples per seed
REST = [parse_pattern("zero_shot/*_from_rest/accuracy")]


def _ranks(accuracy: float) -> list[int]:
    """Ranks of N queries whose accuracy is ``accuracy``: the first ones right, the rest second."""
    right = round(accuracy * N)
    return [1] * right + [2] * (N - right)


def _run(run: Path, seed: int, accuracies: dict[str, float], with_ranks: bool = True) -> Path:
    """A finished run on modalities a, b, c: one zero_shot row per target (from the other two) with the given
    accuracy, plus a row 'b from a' (not one-from-rest) at 0.99, and the per-tuple ranks behind them."""
    (run / "eval").mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": "fake", "seed": seed, "data": {"plugin": "xor"},
                                                     "loss": {"plugin": "clip"}}))
    rows, ranks = [], []
    chosen = [(target, sorted({"a", "b", "c"} - {target}), acc) for target, acc in accuracies.items()]
    for target, query, acc in [*chosen, ("b", ["a"], 0.99)]:
        rows += [{"task": "zero_shot", "target": target, "query": query, "metric": "accuracy", "value": acc, "n": N},
                 {"task": "zero_shot", "target": target, "query": query, "metric": "mrr", "value": 0.5, "n": N}]
        ranks.append({"task": "zero_shot", "target": target, "query": query, "split": "test", "candidates": 8,
                      "tuples": list(range(N)), "ranks": _ranks(acc)})
    (run / "eval" / "report.json").write_text(json.dumps(rows))
    if with_ranks:
        (run / "eval" / "ranks.json").write_text(json.dumps(ranks))
    return run


def _sweep(root: Path, accuracies: dict[str, list[dict[str, float]]], with_ranks: bool = True) -> Path:
    """A sweep directory of grid ``loss`` (one value per key of ``accuracies``) times its seeds, every run finished."""
    recipe = root / "r.yaml"
    recipe.write_text("name: fake\n")
    values = list(accuracies)
    seeds = list(range(len(next(iter(accuracies.values())))))
    plan = new_plan(recipe, [], {"loss": values}, seeds)
    sweep = root / "sweep"
    write_plan(sweep, plan)
    for spec in plan.runs:
        value = spec.overrides[0].split("=", 1)[1]
        _run(slot_dir(sweep, spec) / "run-1", spec.seed, accuracies[value][spec.seed], with_ranks)
    return sweep


def test_headline_is_the_mean_of_the_one_from_rest_rows_with_a_bounded_bootstrap_interval(tmp_path, capsys):
    sweep = _sweep(tmp_path, {"{plugin: clip}": [{"a": 0.2, "b": 0.4, "c": 0.6}, {"a": 0.4, "b": 0.6, "c": 0.8}],
                              "[{plugin: clip}, {plugin: symile}]": [{"a": 1.0, "b": 1.0, "c": 1.0},
                                                                    {"a": 0.9, "b": 1.0, "c": 1.0}]})
    label, runs = configuration(sweep, "loss=clip")
    assert label == "loss={plugin: clip}"
    head = config_headline(label, [load_run(r) for r in runs], REST)
    assert head.values == pytest.approx([0.4, 0.6]) and head.value == pytest.approx(0.5)  # (0.2+0.4+0.6)/3, ...
    assert sorted(head.rows) == ["zero_shot/a_from_b+c/accuracy", "zero_shot/b_from_a+c/accuracy",
                                 "zero_shot/c_from_a+b/accuracy"]  # 'b from a' (0.99) and mrr rows left out
    # by hand: two seeds drawn with replacement, the seed's tuples too; the mean of the two draws lies in
    # [0.4, 0.6] around 0.5, and the tuples add a binomial spread of about 0.03 at each end
    assert 0.32 < head.ci_low < 0.42 and 0.58 < head.ci_high < 0.68 and head.interval == "seeds and tuples"
    _, both = configuration(sweep, "loss=[clip, symile]")
    perfect = config_headline("both", [load_run(r) for r in both], REST)
    assert perfect.value == pytest.approx((1.0 + (0.9 + 2) / 3) / 2)
    assert perfect.ci_high == pytest.approx(1.0) and perfect.ci_low >= 0.9  # a Student t would pass 1.0
    out = tmp_path / "out"
    assert main(["compare", str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "headline" in printed and "0.500" in printed and "seeds and tuples" in printed
    saved = json.loads((out / "headline.json").read_text())
    assert saved["headline"] == "zero_shot/*_from_rest/accuracy"
    assert [c["value"] for c in saved["configurations"]] == pytest.approx([0.5, perfect.value])


def test_without_per_tuple_ranks_the_interval_resamples_seeds_and_is_exact_by_hand(tmp_path):
    sweep = _sweep(tmp_path, {"clip": [{"a": 0.4, "b": 0.4, "c": 0.4}, {"a": 0.6, "b": 0.6, "c": 0.6}]},
                   with_ranks=False)
    _, runs = configuration(sweep, "loss=clip")
    head = config_headline("clip", [load_run(r) for r in runs], REST)
    # two seeds drawn with replacement: means 0.4, 0.5, 0.6 with probabilities 1/4, 1/2, 1/4
    assert (head.value, head.ci_low, head.ci_high, head.interval) == (pytest.approx(0.5), pytest.approx(0.4),
                                                                     pytest.approx(0.6), "seeds")
    explicit = config_headline("clip", [load_run(r) for r in runs], [parse_pattern("zero_shot/b_from_a/accuracy")])
    assert explicit.value == pytest.approx(0.99) and explicit.rows == ["zero_shot/b_from_a/accuracy"]
    with pytest.raises(PolyalignError, match="no evaluation row matches --headline retrieval.*its rows: zero_shot"):
        config_headline("clip", [load_run(r) for r in runs], [parse_pattern("retrieval/*_from_rest/R@1")])
    with pytest.raises(PolyalignError, match="give TASK/TARGET_from_QUERY/METRIC"):
        parse_pattern("zero_shot/accuracy")


def test_paired_headline_of_two_configurations_named_by_grid_value(tmp_path, capsys):
    sweep = _sweep(tmp_path, {"{plugin: clip}": [{"a": 0.5, "b": 0.5, "c": 0.5}] * 3,
                              "{plugin: symile}": [{"a": 0.8, "b": 0.8, "c": 0.8}] * 3,
                              "{plugin: gram}": [{"a": 0.5, "b": 0.5, "c": 0.5}] * 3})
    (_, a), (_, b), (_, same) = (configuration(sweep, f"loss={name}") for name in ("symile", "clip", "gram"))
    row = paired_headline(a, b, REST)
    # each tuple's headline: symile right on the first 80 of 100, clip on the first 50: +1 on 30 tuples
    assert (row.a, row.b, row.difference) == (pytest.approx(0.8), pytest.approx(0.5), pytest.approx(0.3))
    assert row.ci_low < 0.3 < row.ci_high and row.ci_low > 0.15 and row.p_value < 0.001 and row.tuples == 3 * N
    tie = paired_headline(same, b, REST)
    assert tie.difference == 0 and tie.p_value == 1.0
    assert main(["compare", str(sweep), "--paired", "loss=symile", "loss={plugin: clip}", "--out",
                 str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "headline" in printed and "+0.3000" in printed
    saved = json.loads((tmp_path / "paired.json").read_text())
    assert saved["a"] == "loss={plugin: symile}" and saved["b"] == "loss={plugin: clip}"
    assert saved["rows"][0]["task"] == "headline" and saved["rows"][0]["difference"] == pytest.approx(0.3)
    with pytest.raises(PolyalignError, match="names no configuration; its configurations: loss="):
        configuration(sweep, "loss=siglip")
    with pytest.raises(PolyalignError, match="lr is not a key of the sweep's grid"):
        configuration(sweep, "train.lr=0.1")
    assert configuration(sweep, "loss={plugin: gram}")[0] == "loss={plugin: gram}"  # the label as printed


def test_a_selector_naming_several_configurations_asks_for_the_other_keys(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: fake\n")
    sweep = tmp_path / "sweep"
    write_plan(sweep, new_plan(recipe, [], {"loss.plugin": ["clip", "symile"], "train.lr": ["0.1", "0.01"]}, [0]))
    with pytest.raises(PolyalignError, match="names 2 configurations .*give a value of each grid key"):
        configuration(sweep, "loss.plugin=clip")
    assert configuration(sweep, "train.lr=0.010, loss.plugin=clip")[0] == "loss.plugin=clip, train.lr=0.01"


def test_the_objectives_benchmark_is_a_polyalign_sweep_read_back_by_the_compare_headline(tmp_path, capsys):
    """A tiny real sweep: 2 objectives x 2 seeds of a few steps on the xor recipe."""
    spec = importlib.util.spec_from_file_location("objectives", ROOT / "benchmarks" / "objectives.py")
    objectives = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(objectives)
    small = ["data.n_train=128", "data.n_val=32", "data.n_test=64", "train.batch_size=32", "train.epochs=1"]
    objectives.main(["--sets", "xor", "--objectives", "clip", "clip + symile (scored together)", "--seeds", "2",
                     "--jobs", "2", "--sweeps", str(tmp_path / "sweeps"), "--out", str(tmp_path / "o.json"),
                     "--set", *small])
    saved = json.loads((tmp_path / "o.json").read_text())
    sweep = tmp_path / "sweeps" / "xor"
    assert saved["commands"][1].startswith(
        "polyalign sweep polyalign/recipes/xor-symile.yaml --grid 'loss={plugin: clip},")
    heads = saved["headlines"]["xor"]
    for name, selector in (("clip", "loss=clip"), ("clip + symile (scored together)", "loss=[clip, symile]")):
        _, runs = configuration(sweep, selector)
        by_hand = [next(r["value"] for r in json.loads((run / "eval" / "report.json").read_text())
                        if r["target"] == "b" and r["query"] == ["a", "c"] and r["metric"] == "accuracy")
                   for run in sorted(runs, key=lambda r: r.parent.name)]  # seed-0, seed-1
        assert heads[name]["values"] == pytest.approx(by_hand) and heads[name]["value"] == pytest.approx(
            sum(by_hand) / 2)
        assert 0.0 <= heads[name]["ci_low"] <= heads[name]["value"] <= heads[name]["ci_high"] <= 1.0
        assert f"| {name} | {heads[name]['value']:.3f} [" in saved["table"]
    assert main(["compare", str(sweep), "--paired", "loss=[clip, symile]", "loss=clip", "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "paired.json").read_text())["rows"][0]
    both, clip = heads["clip + symile (scored together)"]["value"], heads["clip"]["value"]
    assert (row["task"], row["seeds"], row["tuples"]) == ("headline", [0, 1], 2 * 64)
    assert (row["a"], row["b"], row["difference"]) == (pytest.approx(both), pytest.approx(clip),
                                                       pytest.approx(both - clip))


def test_rest_is_every_queried_modality_even_beside_a_probe_of_classes():
    rows = [{"task": "zero_shot", "target": "text", "query": ["audio", "image"], "metric": "accuracy", "value": 0.5},
            {"task": "linear_probe", "target": "class", "query": ["image"], "metric": "accuracy", "value": 0.9}]
    assert chosen_rows(rows, [parse_pattern("zero_shot/*_from_rest/accuracy")]) == rows[:1]
