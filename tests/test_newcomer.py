"""What a newcomer meets first: start-up without torch, names not found, optional dependencies refused
before the first step, evaluators that fail at the end, the console's epochs and tables."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import matplotlib
import pytest
from rich.console import Console

import polyalign
from polyalign import cli
from polyalign.cli import main
from polyalign.core import requirements
from polyalign.core.errors import PluginError, PolyalignError, RecipeError
from polyalign.core.plugin_manager import describe, make_plugins
from polyalign.core.recipe import validate_recipe
from polyalign.core.registry import Registry
from polyalign.evaluation.evaluate import EvaluatorsFailed
from polyalign.files.yaml_file import read_yaml
from polyalign.shipped import recipe_summary, shipped_recipes

ROOT = Path(__file__).resolve().parents[1]
XOR_CLIP = ROOT / "polyalign" / "recipes" / "xor-clip.yaml"
TINY = ["data.n_train=512", "data.n_val=128", "data.n_test=128", "train.batch_size=64", "train.epochs=2",
        "train.warmup_steps=0", "train.log_every=2"]


def test_a_recipe_name_not_found_suggests_the_closest_shipped_one(capsys):
    assert main(["train", "xor-symle"]) == 2
    err = capsys.readouterr().err
    assert "recipe 'xor-symle' not found" in err and "did you mean 'xor-symile'?" in err
    assert "demo-multimodal" in err  # the shipped recipes are listed
    assert main(["validate", "recipes/xor-symle.yaml"]) == 2  # a path: the file is named
    assert "file not found" in capsys.readouterr().err


def test_a_folder_named_like_a_shipped_recipe_does_not_hide_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "xor-symile").mkdir()  # e.g. `polyalign sweep xor-symile ... --out xor-symile` run before
    assert main(["validate", "xor-symile"]) == 0
    assert "xor-symile: valid" in capsys.readouterr().out


def test_recipes_piped_prints_every_command_whole(capsys):
    assert main(["recipes"]) == 0
    shown = capsys.readouterr().out
    for path in shipped_recipes().values():
        command = recipe_summary(path)[0]
        assert any(command in line for line in shown.splitlines()), command


# ------------------------------------------------------------------ optional dependencies
class NeedsMissing:
    """an evaluator that needs a module this machine lacks"""

    name = "needs_missing"
    requires = {"polyalign_no_such_module": "polyalign-no-such-pkg"}


class NeedsAMissingModule:
    """An evaluator whose module is not installed, declared on its class."""

    @polyalign.hookimpl
    def register_evaluators(self, register):
        register(NeedsMissing)


def test_a_missing_module_refuses_the_recipe_before_any_step(tmp_path):
    plugins = make_plugins(extra=[NeedsAMissingModule()])
    with pytest.raises(RecipeError) as caught:
        polyalign.train(XOR_CLIP, out=tmp_path, overrides=TINY + ["eval=[{plugin: needs_missing}]"], plugins=plugins)
    said = ("evaluator 'needs_missing' needs the module 'polyalign_no_such_module', which is not installed: "
            "pip install polyalign-no-such-pkg")
    assert caught.value.problems == [("eval.0", said)]
    assert not list(tmp_path.iterdir())  # no run directory: nothing was trained
    listed = {c["name"]: c for c in describe(plugins)["evaluators"]}
    assert listed["needs_missing"]["requires"] == {"polyalign_no_such_module": "polyalign-no-such-pkg"}


def test_requires_must_map_module_names_to_requirements():
    with pytest.raises(PluginError, match="must map module names"):
        Registry().add("evaluator", "p", type("X", (), {"name": "x", "requires": ["sklearn"]}))


def test_options_add_requirements_and_validate_names_the_extra(monkeypatch, capsys):
    monkeypatch.setattr(requirements, "is_installed", lambda module: module not in {"peft", "sklearn"})
    raw = read_yaml(XOR_CLIP)
    raw["modalities"]["a"]["encoder"] = {"plugin": "image", "model": "resnet10t", "lora": {"r": 2}}
    recipe = validate_recipe(raw)
    said = "encoder 'image' needs the module 'peft', which is not installed: pip install 'polyalign[lora]'"
    assert requirements.missing_requirements(recipe, make_plugins()) == [("modalities.a.encoder", said)]
    assert main(["validate", "demo-multimodal"]) == 2  # its linear_probe, through the built-in declaration
    err = capsys.readouterr().err
    assert "eval.7: evaluator 'linear_probe' needs the module 'sklearn'" in err
    assert "pip install 'polyalign[probe]'" in err and "valid" not in err


# ------------------------------------------------------------------ an evaluator failing at the end
class BrokenEvaluator:
    """An evaluator that fails after training."""

    @polyalign.hookimpl
    def register_evaluators(self, register):
        class Broken:
            """fails"""

            name = "broken"

            def __call__(self, ctx):
                raise PolyalignError("broken on purpose")

        register(Broken)


@pytest.mark.slow
def test_a_failing_evaluator_keeps_the_others_rows_and_says_how_to_evaluate_again(tmp_path):
    plugins = make_plugins(extra=[BrokenEvaluator()])
    evals = "eval=[{plugin: broken}, {plugin: zero_shot, target: b, query: [a, c]}]"
    with pytest.raises(EvaluatorsFailed) as caught:
        polyalign.train(XOR_CLIP, out=tmp_path, overrides=TINY + [evals], plugins=plugins)
    run = caught.value.run_dir
    message = str(caught.value)
    assert "eval.0 (broken): broken on purpose" in message and f"polyalign eval {run}" in message
    rows = json.loads((run / "eval" / "report.json").read_text())
    assert {r["task"] for r in rows} == {"zero_shot"} and (run / "checkpoints" / "last").is_dir()
    with pytest.raises(EvaluatorsFailed, match="evaluate again with"):
        polyalign.evaluate(run, plugins=plugins)
    assert json.loads((run / "eval" / "report.json").read_text()) == rows


# ------------------------------------------------------------------ the console
@pytest.mark.slow
def test_epochs_count_from_one_everywhere_and_each_reaches_a_piped_log(tmp_path, capsys):
    assert main(["train", str(XOR_CLIP), *TINY, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    epochs = re.findall(r"^epoch (\d+)/2 \(step (\d+)/16\): train_loss [\d.]+, val_loss [\d.]+$", out,
                        flags=re.MULTILINE)
    assert epochs == [("1", "8"), ("2", "16")]
    assert not re.search(r"\d+/16 steps", out)  # no progress bar when piped
    (run,) = tmp_path.iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]
    assert {r["epoch"] for r in rows if r["kind"] == "step" and r["step"] <= 8} == {1}  # the epoch it belongs to
    assert {r["epoch"] for r in rows if r["kind"] == "step" and r["step"] > 8} == {2}
    assert main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"{run} has finished training (2/2 epochs, 16 steps): nothing to train" in out
    assert "epoch 1/2" not in out and "epoch 2/2" not in out


def test_evaluation_tables_wrap_between_modality_names():
    names = ["audio", "ecg", "image", "spectrogram", "text"]
    rows = [{"task": "zero_shot", "target": "b", "query": names, "metric": m, "value": 0.5}
            for m in ("accuracy", "top5", "mrr")]
    buffer = io.StringIO()
    console = Console(file=buffer, width=36, highlight=False)
    for table in cli._rows_tables(rows, "evaluation"):
        console.print(table)
    body = buffer.getvalue().split("┡", 1)[1]
    words = set(re.findall(r"[a-z]+", body))
    assert set(names) <= words <= set(names) | {"b"}, words  # no name cut in two


def test_compare_subtitle_names_error_bars_only_when_drawn():
    from polyalign.evaluation.compare import RunReport, _bar_panel, _collect
    from polyalign.evaluation.report_plots import new_figure

    matplotlib.use("Agg")
    rows = [{"task": "missing_modality", "target": "b", "query": q, "metric": "accuracy", "value": 0.5}
            for q in (["a"], ["a", "c"])]
    with_ci = [dict(r, ci_low=0.4, ci_high=0.6) for r in rows]
    fig = new_figure(6, 4)
    for second, expected in ((rows, False), (with_ci, True)):
        runs = [RunReport(Path("x"), "x", rows), RunReport(Path("y"), "y", second)]
        ax = fig.subplots()
        _bar_panel(ax, runs, *_collect(runs)[:2])
        assert ("error bars" in ax.get_title()) is expected
