"""Tests of the modality_gap evaluator: a short run of the package's recipe, checked against the embeddings."""

import json
import runpy
from pathlib import Path

import polyalign
from polyalign.plugin import check_evaluator

EXAMPLE = Path(__file__).resolve().parents[1]


def test_the_recipe_trains_and_reports_the_modality_gap(tmp_path):
    write_toy_data = runpy.run_path(str(EXAMPLE / "make_data.py"))["write_toy_data"]
    data = write_toy_data(tmp_path / "data", n_train=32, n_val=8, n_test=16, layout="folders")
    overrides = [f"data.path={data}", "train.epochs=2", "train.batch_size=16", "train.log_every=1"]
    run = polyalign.train(EXAMPLE / "imu-caption-folders.yaml", out=tmp_path / "runs", overrides=overrides)
    report = json.loads((run / "eval" / "report.json").read_text())
    (gap,) = [r for r in report if r["task"] == "modality_gap"]
    assert (gap["target"], gap["query"], gap["metric"], gap["n"]) == ("caption", ["imu"], "gap", 16)
    test = polyalign.build("dataset", "tuple_folders", path=str(data)).split("test")
    z = polyalign.load(run).embed({m: [s[m] for s in test] for m in ("imu", "caption")}, root=data)
    assert abs(gap["value"] - float((z["imu"].mean(0) - z["caption"].mean(0)).norm())) < 1e-5
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "margin_clip/loss" in metrics[0] and "align_uniform/loss" in metrics[0]  # one metric per term


def test_modality_gap_keeps_the_evaluator_contract():
    # runs it on a tiny untrained model and data: the rows' shape and names, finite and repeatable values
    rows = check_evaluator("modality_gap")
    assert {r["metric"] for r in rows} == {"gap"}
