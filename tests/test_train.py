"""End-to-end CPU training: run directory contents, falling loss, exact resume."""

from __future__ import annotations

import json

import pytest
from crash_plugin import Crash, CrashAtEndOfEpochTwo
from safetensors.torch import load_file

import polyalign
from polyalign.core.plugin_manager import make_plugins


def _rows(run, kind):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_xor_clip_writes_run_directory_and_loss_falls(tmp_path, xor_clip, tiny_xor):
    run = polyalign.train(xor_clip, out=tmp_path, overrides=tiny_xor + ["train.epochs=4"])
    assert (run / "recipe.yaml").is_file()
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
    assert (run / "checkpoints" / "best" / "state.pt").is_file()
    steps = _rows(run, "step")
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert {"lr", "temperature", "samples_per_s"} <= set(steps[0])
    epochs = _rows(run, "epoch")
    assert len(epochs) == 4 and "val_loss" in epochs[0]
    report = json.loads((run / "eval" / "report.json").read_text())
    assert {r["metric"] for r in report} >= {"accuracy", "mrr"}
    assert all(set(r) >= {"task", "target", "query", "metric", "value"} for r in report)
    markdown = (run / "eval" / "report.md").read_text()
    assert "## zero_shot" in markdown and "| target | query | accuracy |" in markdown and "| b | a+c | " in markdown
    assert markdown.index("**Headline: ") < markdown.index("## zero_shot")  # the headline first
    # re-evaluating the run from its checkpoint gives the same rows
    assert polyalign.evaluate(run) == report


@pytest.mark.parametrize("extra", [[], ["train.accumulate=2", "train.checkpoint_every=3"]])
@pytest.mark.slow
def test_resume_after_epoch_one_matches_uninterrupted(tmp_path, xor_clip, tiny_xor, extra):
    overrides = tiny_xor + ["train.epochs=3", "missing.train_rate={a: 0.2}"] + extra
    full = polyalign.train(xor_clip, out=tmp_path / "full", overrides=overrides)
    with pytest.raises(Crash):
        polyalign.train(xor_clip, out=tmp_path / "cut", overrides=overrides,
                        plugins=make_plugins(extra=[CrashAtEndOfEpochTwo()]))
    (cut,) = (tmp_path / "cut").iterdir()
    resumed = polyalign.train(None, resume=cut)
    assert resumed == cut
    a = load_file(str(full / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(cut / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), k
    strip = lambda rows: [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rows]  # noqa: E731
    assert strip(_rows(full, "step")) == strip(_rows(cut, "step"))
    assert strip(_rows(full, "epoch")) == strip(_rows(cut, "epoch"))
