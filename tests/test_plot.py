"""``polyalign plot``: curves of real and hand-written runs, overlaid, labelled, as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import polyalign
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.evaluation.training_plots import plot_runs, read_run, run_names, training_figure

RECIPE = Path(__file__).resolve().parents[1] / "polyalign" / "recipes" / "xor-clip.yaml"
TINY = ["data.n_train=512", "data.n_val=128", "data.n_test=128", "train.batch_size=64",
        "train.epochs=2", "train.warmup_steps=0", "train.log_every=2"]


def hand_run(folder: Path) -> Path:
    """A run directory written by hand: 2 epochs of 4 and 6 steps, a third cut after 2 steps."""
    folder.mkdir()
    rows = [{"kind": "step", "step": s, "epoch": 0, "loss": 5.0 - 0.1 * s, "lr": 0.01, "temperature": 0.07}
            for s in (2, 4)]
    rows.append({"kind": "epoch", "step": 4, "epoch": 1, "train_loss": 4.7, "val_loss": 4.8})
    rows += [{"kind": "step", "step": s, "epoch": 1, "loss": 5.0 - 0.1 * s, "lr": 0.005, "temperature": 0.06}
             for s in (7, 10)]
    rows.append({"kind": "epoch", "step": 10, "epoch": 2, "train_loss": 4.2, "val_loss": 4.4})
    rows.append({"kind": "step", "step": 13, "epoch": 2, "loss": 3.9, "lr": 0.001, "temperature": 0.05})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "eval").mkdir()
    (folder / "eval" / "report.json").write_text(json.dumps([
        {"task": "zero_shot", "target": "b", "query": ["a", "c"], "metric": "accuracy", "value": 0.75},
        {"task": "zero_shot", "target": "a", "query": ["b"], "metric": "mrr", "value": 0.5}]))
    return folder


def test_steps_map_to_fractional_epochs(tmp_path):
    run = read_run(hand_run(tmp_path / "hand"))
    x, y = run.series("loss")
    # epoch 1 ends at step 4, epoch 2 at step 10 (6 steps long), step 13 is half-way through epoch 3
    assert x.tolist() == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5])
    assert y.tolist() == pytest.approx([4.8, 4.6, 4.3, 4.0, 3.9])
    ex, ey = run.series("val_loss", kind="epoch")
    assert ex.tolist() == [1.0, 2.0] and ey.tolist() == [4.8, 4.4]


def test_figure_overlays_runs_with_labelled_axes(tmp_path):
    real = polyalign.train(RECIPE, out=tmp_path / "runs", overrides=TINY)
    runs = [read_run(real), read_run(hand_run(tmp_path / "hand"))]
    fig = training_figure(runs)
    loss, tau, lr, evaluation = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Temperature τ (learned)", "Learning rate (schedule)",
                                                   "Evaluation (test split)"]
    assert loss.get_xlabel() == "epoch" and loss.get_ylabel() == "loss (nats)"
    assert tau.get_ylabel() == "τ (dimensionless)" and lr.get_xlabel() == "epoch"
    assert len(loss.get_lines()) == 2 * 3  # per run: steps, epoch train mean, validation
    assert [text.get_text() for text in fig.legends[0].get_texts()] == [real.name, "hand"]
    assert [t.get_text() for t in loss.get_legend().get_texts()] == [
        "train, per logged step", "train, epoch mean", "validation, end of epoch"]
    hand_tau = tau.get_lines()[1].get_ydata()
    assert np.allclose(hand_tau, [0.07, 0.07, 0.06, 0.06, 0.05])
    # the real run's validation curve is what it logged
    logged = [json.loads(line) for line in (real / "metrics.jsonl").read_text().splitlines()]
    assert loss.get_lines()[2].get_ydata().tolist() == [r["val_loss"] for r in logged if r["kind"] == "epoch"]
    # evaluation bars, one per (run, row): the real run reports accuracy, top5 and mrr of b from
    # a+c; the hand run accuracy of b from a+c and mrr of a from b
    report = json.loads((real / "eval" / "report.json").read_text())
    widths = np.array([p.get_width() for p in evaluation.patches])
    assert widths.shape == (8,)
    assert np.allclose(widths[:3], [r["value"] for r in report]) and np.isnan(widths[3])
    assert np.allclose(widths[4:], [0.75, np.nan, np.nan, 0.5], equal_nan=True)
    assert [t.get_text() for t in evaluation.get_yticklabels()] == [
        "b from a+c · accuracy", "b from a+c · top5", "b from a+c · mrr", "a from b · mrr"]
    assert evaluation.get_xlabel() == "value (fraction of queries; 1 = perfect)"


@pytest.mark.slow
def test_cli_plot_writes_a_png(tmp_path, capsys):
    one, two = hand_run(tmp_path / "one"), hand_run(tmp_path / "two")
    assert main(["plot", str(one)]) == 0
    assert (one / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "plots" / "both.png"
    assert main(["plot", str(one), str(two), "--out", str(out)]) == 0
    assert out.stat().st_size > 20_000
    assert main(["plot", str(tmp_path)]) == 2
    assert "has no metrics.jsonl or metrics.csv" in capsys.readouterr().err
    with pytest.raises(PolyalignError, match="ending in .png"):
        plot_runs([one], tmp_path / "x.pdf")


def test_runs_of_one_recipe_are_named_by_the_settings_that_differ_and_bars_by_their_rate(tmp_path):
    runs = []
    for seed, lr in ((0, 0.01), (1, 0.01), (0, 0.05)):
        run = hand_run(tmp_path / f"demo-2026120{seed}-{int(lr * 100)}")
        (run / "recipe.yaml").write_text(f"name: demo\nseed: {seed}\ntrain: {{lr: {lr}, epochs: 2}}\n")
        runs.append(run)
    assert run_names(runs) == [f"seed=0, train.lr=0.01 ({runs[0].name})", f"seed=1, train.lr=0.01 ({runs[1].name})",
                               f"seed=0, train.lr=0.05 ({runs[2].name})"]
    assert run_names(runs[:1]) == [runs[0].name]  # one run: its folder
    curve = read_run(runs[0])
    curve.eval_rows = [{"task": "dropout_curve", "target": "b", "query": ["a", "c"], "dropped": "a", "rate": r,
                        "metric": "accuracy", "value": 0.8 - r} for r in (0.0, 0.5)]
    evaluation = training_figure([curve]).axes[3]
    assert [t.get_text() for t in evaluation.get_yticklabels()] == [
        "b from a+c, dropped a, rate 0 · accuracy", "b from a+c, dropped a, rate 0.5 · accuracy"]
