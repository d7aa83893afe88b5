"""Logger plugins: csv and tensorboard write what jsonl writes, and forget what a resume redoes."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest
from crash_plugin import Crash, CrashAtEndOfEpochTwo

import polyalign
from polyalign.core.errors import PolyalignError
from polyalign.core.plugin_manager import make_plugins

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "xor-clip.yaml"
OVERRIDES = ["data.n_train=512", "data.n_val=128", "data.n_test=128", "train.batch_size=64",
             "train.epochs=3", "train.warmup_steps=0", "train.log_every=2",
             "logging=[jsonl, csv, tensorboard]"]
VOLATILE = {"samples_per_s"}  # wall-clock throughput differs between runs


def jsonl_rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def csv_rows(run):
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def scalars(run):
    """{tag: [(step, value)]} read back with TensorBoard's own reader."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("tensorboard")
    return polyalign.train(RECIPE, out=tmp_path_factory.mktemp("full"), overrides=OVERRIDES)


def test_csv_holds_the_jsonl_rows(run):
    expected = jsonl_rows(run)
    got = csv_rows(run)
    assert len(got) == len(expected) == 3 * 8 // 2 + 3
    assert list(got[0])[:3] == ["kind", "step", "epoch"]
    for want, row in zip(expected, got):
        assert {k: v for k, v in row.items() if v != ""} == {k: str(v) for k, v in want.items()}
    assert float(got[-1]["val_loss"]) == expected[-1]["val_loss"]  # full precision


def test_tensorboard_events_read_back(run):
    tags = scalars(run)
    steps = [r for r in jsonl_rows(run) if r["kind"] == "step"]
    epochs = [r for r in jsonl_rows(run) if r["kind"] == "epoch"]
    for key in ("loss", "temperature", "lr", "samples_per_s", "loss_a-b"):
        assert [s for s, _ in tags[f"train/{key}"]] == [r["step"] for r in steps]
        assert [v for _, v in tags[f"train/{key}"]] == pytest.approx([r[key] for r in steps], rel=1e-6)
    assert [v for _, v in tags["epoch/val_loss"]] == pytest.approx([r["val_loss"] for r in epochs], rel=1e-6)
    report = json.loads((run / "eval" / "report.json").read_text())
    accuracy = next(r["value"] for r in report if r["metric"] == "accuracy")
    assert tags["eval/test/zero_shot/b_from_a+c/accuracy"] == [(24, pytest.approx(accuracy, rel=1e-6))]


def test_resume_drops_what_it_redoes(run, tmp_path):
    with pytest.raises(Crash):
        polyalign.train(RECIPE, out=tmp_path, overrides=OVERRIDES,
                        plugins=make_plugins(extra=[CrashAtEndOfEpochTwo()]))
    (cut,) = tmp_path.iterdir()
    polyalign.train(None, resume=cut)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]  # noqa: E731
    assert strip(csv_rows(cut)) == strip(csv_rows(run))
    full, resumed = scalars(run), scalars(cut)
    assert set(full) == set(resumed)
    for tag in full:
        if tag != "train/samples_per_s":
            assert resumed[tag] == full[tag], tag  # each step once, same values


def test_tensorboard_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(PolyalignError, match=r"logger 'tensorboard' needs the tensorboard package.*pip install tensorboard"):
        make_plugins().build("logger", "tensorboard", {"run_dir": tmp_path})


def documented_logger_module() -> types.ModuleType:
    """The complete logger plugin of the plugin guide, imported as its own module."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md").read_text()
    code = text.split("`polyalign_console_log/__init__.py`:", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("polyalign_console_log")
    exec(compile(code, "docs/writing-a-plugin.md", "exec"), module.__dict__)
    return module


def test_the_documented_third_party_logger_works(tmp_path, capsys):
    plugins = make_plugins(extra=[documented_logger_module()])
    assert "console" in plugins.registry.names("logger")
    overrides = OVERRIDES[:-1] + ["train.epochs=1", "logging=[console]"]
    run = polyalign.train(RECIPE, out=tmp_path, overrides=overrides, plugins=plugins)
    err = capsys.readouterr().err
    assert f"[{run.name}] epoch 1 (step 8): train_loss=" in err
    assert "test: b from a+c accuracy=" in err
    assert not (run / "metrics.jsonl").exists()  # only the chosen logger ran
