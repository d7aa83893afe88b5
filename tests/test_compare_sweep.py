"""Configurations compared over seeds (mean, std, percentile bootstrap interval) and paired tests on per-tuple ranks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.evaluation.aggregate import aggregate_groups, mean_interval
from polyalign.evaluation.paired import native_name, paired_bootstrap, paired_test, per_query, sign_flip_p

N = 200  # test tuples per seed


def _run(root: Path, seed: int, accuracy: float, ranks: list[int], data: dict | None = None) -> Path:
    """A finished run directory: its recipe, report rows and per-tuple ranks."""
    run = root / f"seed-{seed}" / "run"
    (run / "eval").mkdir(parents=True)
    recipe = {"name": "fake", "seed": seed, "data": data or {"plugin": "xor", "n_test": N}, "loss": {"plugin": "x"}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    rows = [{"task": "zero_shot", "target": "b", "query": ["a", "c"], "metric": m, "value": v, "n": N}
            for m, v in (("accuracy", accuracy), ("mrr", accuracy / 2))]
    (run / "eval" / "report.json").write_text(json.dumps(rows))
    (run / "eval" / "ranks.json").write_text(json.dumps([{"task": "zero_shot", "target": "b", "query": ["a", "c"],
                                                          "split": "test", "candidates": 4,
                                                          "tuples": list(range(len(ranks))), "ranks": ranks}]))
    return run


def test_the_interval_over_runs_is_a_percentile_bootstrap_inside_the_values_and_bounds():
    got = mean_interval([0.5, 0.6, 0.7])
    assert got["value"] == pytest.approx(0.6) and got["std"] == pytest.approx(0.1)
    assert 0.5 <= got["ci_low"] < 0.6 < got["ci_high"] <= 0.7
    two = mean_interval([0.918, 1.0])  # a Student-t interval of these two seeds is [0.438, 1.480]
    assert two["ci_low"] == pytest.approx(0.918) and two["ci_high"] == pytest.approx(1.0)
    assert mean_interval([0.5, 0.6, 0.7]) == got  # seeded: the same table every time
    assert "ci_low" not in mean_interval([0.3])  # one run: a mean, no interval


@pytest.mark.slow
def test_a_folder_per_configuration_is_aggregated_into_one_line_each(tmp_path, capsys):
    for seed, acc in enumerate((0.5, 0.6, 0.7)):
        _run(tmp_path / "symile", seed, acc, [1] * N)
        _run(tmp_path / "clip", seed, acc / 10, [2] * N)
    out = tmp_path / "out"
    result = aggregate_groups({"symile": sorted((tmp_path / "symile").rglob("run")),
                               "clip": sorted((tmp_path / "clip").rglob("run"))}, out)
    [(task, header, lines, n_left)] = result.tables()  # one task: one table with only its columns
    assert task == "zero_shot" and n_left == 3
    assert header == ["configuration", "target", "query", "accuracy", "mrr"]  # 3 runs each: said in the caption
    assert [line[:3] for line in lines] == [["symile", "b", "a+c"], ["clip", "b", "a+c"]]
    low, high = (float(x) for x in lines[0][3].removeprefix("0.600 [").removesuffix("]").split(", "))
    assert 0.5 <= low < 0.6 < high <= 0.7  # a percentile bootstrap over the 3 runs, inside their range
    assert result.caption().startswith("3 run(s) per configuration")
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [(r["configuration"], r["metric"]) for r in rows] == [("symile", "accuracy"), ("symile", "mrr"),
                                                                 ("clip", "accuracy"), ("clip", "mrr")]
    assert float(rows[2]["mean"]) == pytest.approx(0.06) and rows[2]["values"] == "0.05 0.06 0.07"
    saved = json.loads((out / "compare.json").read_text())
    assert saved["clip"][0]["runs"] == 3 and saved["clip"][0]["std"] == pytest.approx(0.01)
    assert (out / "compare.png").stat().st_size > 1000 and lines[0][3] in (out / "compare.md").read_text()
    assert main(["compare", str(tmp_path / "symile"), str(tmp_path / "clip"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0.600" in printed and "percentile bootstrap" in printed  # (the table wraps on a narrow terminal)


@pytest.mark.slow
def test_paired_test_finds_a_real_difference_and_not_a_made_up_one(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for seed in range(3):
        _run(tmp_path / "a", seed, 1.0, [1] * N)
        _run(tmp_path / "b", seed, 0.5, [int(r) for r in rng.integers(1, 3, N)])  # right half of the time
        _run(tmp_path / "same", seed, 1.0, [1] * N)
    a, b, same = (sorted((tmp_path / s).rglob("run")) for s in ("a", "b", "same"))
    (row,) = paired_test(a, b, "accuracy")
    b_accuracy = np.mean([json.loads((r / "eval" / "ranks.json").read_text())[0]["ranks"] for r in b])
    assert row.b == pytest.approx(float(np.mean([np.asarray(json.loads((r / "eval" / "ranks.json").read_text())[0]
                                                             ["ranks"]) == 1 for r in b])))
    assert row.difference == pytest.approx(row.a - row.b) and row.ci_low < row.difference < row.ci_high
    assert row.p_value < 0.01 and row.seeds == [0, 1, 2] and row.tuples == 3 * N and b_accuracy > 1
    (tie,) = paired_test(a, same, "mrr")
    assert tie.difference == 0 and tie.p_value == 1.0
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--paired", "--out", str(tmp_path)]) == 0
    assert "paired comparison" in capsys.readouterr().out
    assert json.loads((tmp_path / "paired.json").read_text())["rows"][0]["p_value"] < 0.01


def test_permutation_p_and_bootstrap_against_their_definitions():
    rng = np.random.default_rng(1)
    d = np.array([1.0, -1.0, 1.0, 1.0])  # 16 sign patterns; |mean| >= 0.5 for 10 of them
    assert sign_flip_p(d, rng, 20000) == pytest.approx(10 / 16, abs=0.02)
    boot = paired_bootstrap([np.ones(5), np.zeros(5)], np.random.default_rng(2), 4000)
    assert set(np.round(boot, 6)) <= {0.0, 0.5, 1.0} and boot.mean() == pytest.approx(0.5, abs=0.05)  # seeds drawn
    assert per_query("top5", np.array([1, 5, 6])).tolist() == [1, 1, 0]
    assert per_query("mrr", np.array([1, 4])).tolist() == [1.0, 0.25]


def test_paired_refuses_runs_of_other_data_or_unmatched_seeds(tmp_path):
    a = [_run(tmp_path / "a", 0, 1.0, [1] * N)]
    with pytest.raises(PolyalignError, match="different data"):
        paired_test(a, [_run(tmp_path / "b", 0, 1.0, [1] * N, {"plugin": "xor", "n_test": 7})])
    with pytest.raises(PolyalignError, match="no seed has a run on both sides"):
        paired_test(a, [_run(tmp_path / "c", 1, 1.0, [1] * N)])
    with pytest.raises(PolyalignError, match="not a per-query metric"):
        paired_test(a, a, "median_rank")


def test_a_paired_row_keeps_the_metric_name_its_evaluator_gave():
    assert native_name("accuracy", ["R@1", "R@5", "mean_rank"]) == "R@1"  # retrieval's top-1 is R@1
    assert native_name("top5", ["R@1", "R@5"]) == "R@5" and native_name("R@5", ["accuracy", "top5"]) == "top5"
    assert native_name("accuracy", ["accuracy", "top5"]) == "accuracy"
    assert native_name("mrr", ["R@1"]) == "mrr"
