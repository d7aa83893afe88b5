"""`polyalign compare`: several runs' reports aligned in one table and one figure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import polyalign
from polyalign import cli
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.evaluation.compare import compare_runs, load_run
from polyalign.core.report_table import cell_text

RECIPES = Path(__file__).resolve().parents[1] / "polyalign" / "recipes"
TINY = ["data.n_train=256", "data.n_val=64", "data.n_test=64", "train.batch_size=64", "train.epochs=1",
        "train.warmup_steps=0", "eval=[{plugin: missing_modality, targets: [b], rates: [0.0, 0.5], resamples: 30}]"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A fully observed CLIP run and one trained with `a` dropped half the time (learned placeholder)."""
    out = tmp_path_factory.mktemp("runs")
    full = polyalign.train(RECIPES / "xor-clip.yaml", out=out, overrides=TINY)
    holes = polyalign.train(RECIPES / "xor-clip.yaml", out=out, overrides=TINY + [
        "name=xor-clip-holes", "missing={strategy: learned, train_rate: {a: 0.5}}"])
    return full, holes


@pytest.mark.slow
def test_compare_aligns_rows_and_writes_table_and_plot(two_runs, tmp_path):
    full, holes = two_runs
    result = compare_runs([full, holes], tmp_path / "cmp")
    assert result.header[-2:] == ["xor-clip (clip)", "xor-clip-holes (clip)"]
    reports = [json.loads((r / "eval" / "report.json").read_text()) for r in (full, holes)]
    assert len(result.lines) == len(reports[0]) == len(reports[1])  # same evaluator: every row aligned
    by_key = {tuple(line[:-2]): line[-2:] for line in result.lines}
    ids = result.header[:-2]
    for column, rows in enumerate(reports):
        for r in rows:
            key = tuple(cell_text(r.get(k)) for k in ids)
            assert by_key[key][column] == f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| xor-clip (clip) | " in markdown and str(holes) in markdown
    section = markdown[markdown.index("## missing_modality"):markdown.index("## dropout_curve")]
    assert "| target | query | metric | xor-clip (clip) |" in section  # no dropped/rate: not its columns
    assert "| b | a+c | accuracy |" in section and "![comparison](compare.png)" in markdown
    with Image.open(tmp_path / "cmp" / "compare.png") as img:
        assert img.format == "PNG" and img.size[0] > 700 and img.size[1] > 500


@pytest.mark.slow
def test_compare_cli_prints_the_table_and_filters_metrics(two_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.out, "width", 200)
    assert main(["compare", str(two_runs[0]), str(two_runs[1]), "--metric", "accuracy"]) == 0
    shown = capsys.readouterr().out
    assert "xor-clip-holes (clip)" in shown and "dropout_curve" in shown
    lines = (tmp_path / "compare.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("| b |")]
    assert "## missing_modality" in lines and "## dropout_curve" in lines
    assert table and all(" accuracy |" in line for line in table)
    assert (tmp_path / "compare.png").is_file()


@pytest.mark.slow
def test_same_recipe_twice_gets_distinct_columns(two_runs, tmp_path):
    result = compare_runs([two_runs[0], two_runs[0]], tmp_path)
    assert result.header[-2:] == ["xor-clip (clip) #1", "xor-clip (clip) #2"]


def test_compare_errors_say_what_to_do(two_runs, tmp_path, capsys):
    with pytest.raises(PolyalignError, match="at least two"):
        compare_runs([two_runs[0]], tmp_path)
    with pytest.raises(PolyalignError, match="not a run directory"):
        load_run(tmp_path)
    unevaluated = tmp_path / "unevaluated"
    shutil.copytree(two_runs[0], unevaluated, ignore=shutil.ignore_patterns("eval"))
    with pytest.raises(PolyalignError, match=f"`polyalign eval {unevaluated}` writes it"):
        load_run(unevaluated)
    assert main(["compare", str(two_runs[0]), str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_runs_without_a_report_are_skipped_with_the_reason(two_runs, tmp_path, capsys, monkeypatch):
    """A run stopped before its first checkpoint (only recipe.yaml) is left out of the comparison, saying
    why and what to do, instead of sending the user to `eval` and from there to `train --resume`."""
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    shutil.copy(two_runs[0] / "recipe.yaml", stopped)
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(two_runs[0]), str(stopped), str(two_runs[1])]) == 0
    err = capsys.readouterr().err
    assert f"skipped: {stopped} has no checkpoint and no evaluation: the run was stopped before its first" in err
    assert f"polyalign train --resume {stopped}" in err
    assert str(stopped) not in (tmp_path / "compare.md").read_text()


def test_the_evaluator_tells_rows_apart_only_where_two_nodes_gave_alike_rows():
    from polyalign.core.report_table import identity_fields

    row = {"task": "retrieval", "target": "a", "query": ["b"], "metric": "R@1", "value": 0.5}
    old, new = dict(row), {**row, "evaluator": "retrieval"}  # a run evaluated before rows named their evaluator
    assert identity_fields([old, new]) == ["task", "target", "query"]  # the two runs' rows line up
    other = {**row, "evaluator": 'retrieval {"match": "label"}', "value": 0.9}
    assert identity_fields([new, other]) == ["task", "target", "query", "evaluator"]  # two nodes, both kept


def test_runs_of_one_recipe_are_told_apart_by_their_seed_and_results_do_not_split_rows(tmp_path):
    runs = []
    for seed, c in ((0, 1.0), (1, 100.0)):  # each seed's probe picked another C on val
        run = tmp_path / f"demo-2026120{seed}"
        (run / "eval").mkdir(parents=True)
        (run / "recipe.yaml").write_text(f"name: demo\nseed: {seed}\nloss: {{plugin: clip}}\n")
        (run / "eval" / "report.json").write_text(json.dumps([
            {"task": "linear_probe", "target": "class", "query": ["a"], "shots": "all", "metric": m, "value": v}
            for m, v in (("accuracy", 0.8 + seed / 10), ("chosen_C", c))]))
        runs.append(run)
    result = compare_runs(runs, tmp_path / "cmp")
    assert result.header == ["task", "target", "query", "shots", "metric", "demo (clip) seed=0", "demo (clip) seed=1"]
    assert [line[4:] for line in result.lines] == [["accuracy", "0.800", "0.900"], ["chosen_C", "1.000", "100.000"]]
