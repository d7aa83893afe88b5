"""Loggers wandb (offline run files) and mlflow (a real SQLite tracking store), read back with
their own formats and client; a resumed run continues the same tracked run, each step once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from crash_plugin import Crash, CrashAtEndOfEpochTwo
from wandb_records import offline_runs

import polyalign
from polyalign.cli import main
from polyalign.core.errors import PolyalignError, RecipeError
from polyalign.core.plugin_manager import make_plugins

pytest.importorskip("wandb")
pytest.importorskip("mlflow")

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "xor-clip.yaml"
BASE = ["data.n_train=512", "data.n_val=128", "data.n_test=128", "train.batch_size=64", "train.epochs=3",
        "train.warmup_steps=0", "train.log_every=2"]
VOLATILE = "samples_per_s"  # wall-clock throughput differs between runs


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """W&B offline, with its settings and caches in a temporary folder: nothing leaves the machine."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                            "WANDB_CONFIG_DIR": home, "WANDB_CACHE_DIR": home, "WANDB_DATA_DIR": home}.items():
            mp.setenv(name, str(value))
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def overrides(store: str) -> list[str]:
    return BASE + [f"logging=[jsonl, wandb, {{plugin: mlflow, tracking_uri: '{store}', experiment: xor}}]"]


@pytest.fixture(scope="module")
def run(offline, store, tmp_path_factory):
    return polyalign.train(RECIPE, out=tmp_path_factory.mktemp("full"), overrides=overrides(store))


def jsonl(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def mlflow_run(run: Path):
    from mlflow.tracking import MlflowClient

    saved = json.loads((run / "mlflow-run.json").read_text())
    client = MlflowClient(saved["tracking_uri"])
    return client, client.get_run(saved["run_id"])


def mlflow_history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_both_loggers_are_listed(capsys):
    assert main(["plugins", "--json"]) == 0
    names = {c["name"] for c in json.loads(capsys.readouterr().out)["loggers"]}
    assert {"wandb", "mlflow", "jsonl", "csv", "tensorboard"} <= names


def test_wandb_offline_files_hold_config_steps_epochs_eval_table_and_plot(run):
    (logged,) = offline_runs(run)
    assert logged["id"] == json.loads((run / "wandb-run.json").read_text())["id"]
    assert logged["config"]["name"] == "xor-clip" and logged["config"]["train"]["lr"] == 0.01
    history = {row["_step"]: row for row in logged["history"]}
    for row in jsonl(run, "step"):
        assert history[row["step"]]["train/loss"] == pytest.approx(row["loss"], rel=1e-9)
        assert history[row["step"]]["train/lr"] == pytest.approx(row["lr"], rel=1e-9)
    for row in jsonl(run, "epoch"):
        assert history[row["step"]]["epoch/val_loss"] == pytest.approx(row["val_loss"], rel=1e-9)
        assert history[row["step"]]["epoch/epoch"] == row["epoch"]
    report = json.loads((run / "eval" / "report.json").read_text())
    accuracy = next(r["value"] for r in report if r["metric"] == "accuracy")
    last = history[24]
    assert last["eval/test/zero_shot/b_from_a+c/accuracy"] == pytest.approx(accuracy)
    assert last["eval/test/rows/_type"] == "table-file" and last["eval/test/rows/nrows"] == len(report)
    assert last["eval/test/heatmap/_type"] == "image-file"
    table = json.loads(next(run.glob("wandb/offline-run-*/files/media/table/eval/test/rows_*.table.json")).read_text())
    assert table["columns"][:5] == ["task", "target", "query", "metric", "value"]
    assert ["zero_shot", "b", "a+c", "accuracy", pytest.approx(accuracy)] in [row[:5] for row in table["data"]]


def test_mlflow_store_holds_params_steps_epochs_eval_and_plot(run):
    client, tracked = mlflow_run(run)
    run_id = tracked.info.run_id
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == run.name
    assert client.get_experiment(tracked.info.experiment_id).name == "xor"
    assert tracked.data.params["train.lr"] == "0.01" and tracked.data.params["loss.plugin"] == "clip"
    assert tracked.data.params["modalities.a.encoder.hidden"] == "[]"
    assert tracked.data.tags["polyalign.run_dir"] == str(run.resolve())
    assert mlflow_history(client, run_id, "train/loss") == [(r["step"], pytest.approx(r["loss"], rel=1e-9))
                                                            for r in jsonl(run, "step")]
    assert mlflow_history(client, run_id, "epoch/val_loss") == [(r["step"], pytest.approx(r["val_loss"], rel=1e-9))
                                                                for r in jsonl(run, "epoch")]
    report = json.loads((run / "eval" / "report.json").read_text())
    accuracy = next(r["value"] for r in report if r["metric"] == "accuracy")
    assert mlflow_history(client, run_id, "eval/test/zero_shot/b_from_a and c/accuracy") == [
        (24, pytest.approx(accuracy))]
    files = {f.path for f in client.list_artifacts(run_id)} | {f.path for f in client.list_artifacts(run_id, "eval")}
    assert {"recipe.yaml", "eval/test", "eval/test_rows.json"} <= files
    assert [f.path for f in client.list_artifacts(run_id, "eval/test")] == ["eval/test/heatmap.png"]
    assert Path(tracked.info.artifact_uri.removeprefix("file://")).parent.parent.name == "mlartifacts"


def test_resume_continues_the_same_tracked_runs_without_repeating_a_step(run, offline, store, tmp_path):
    with pytest.raises(Crash):
        polyalign.train(RECIPE, out=tmp_path, overrides=overrides(store),
                        plugins=make_plugins(extra=[CrashAtEndOfEpochTwo()]))
    (cut,) = tmp_path.iterdir()
    client, failed = mlflow_run(cut)
    assert failed.info.status == "FAILED"
    polyalign.train(None, resume=cut)

    first, resumed = offline_runs(cut)
    assert resumed["id"] == first["id"] and resumed["branch_point"] == 8  # the epoch-1 checkpoint's step
    assert max(r["_step"] for r in first["history"]) == 16  # epoch 2 was logged before the crash
    kept = [r for r in first["history"] if r["_step"] <= 8] + resumed["history"]  # what W&B keeps when synced
    (full,) = offline_runs(run)
    strip = lambda rows: [{k: v for k, v in r.items() if VOLATILE not in k and not k.startswith("_")}  # noqa: E731
                          for r in rows]
    assert [r["_step"] for r in kept] == [r["_step"] for r in full["history"]]
    assert strip(kept)[:-1] == strip(full["history"])[:-1]  # the last row holds the eval table and image files

    client, tracked = mlflow_run(cut)
    assert tracked.info.status == "FINISHED"
    _, reference = mlflow_run(run)
    assert set(tracked.data.metrics) == set(reference.data.metrics)
    for key in tracked.data.metrics:
        got = mlflow_history(client, tracked.info.run_id, key)
        assert [s for s, _ in got] == [s for s, _ in mlflow_history(client, reference.info.run_id, key)], key
        if VOLATILE not in key:
            assert got == mlflow_history(client, reference.info.run_id, key), key


def test_mlflow_takes_the_store_from_the_environment_when_the_recipe_names_none(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    run = polyalign.train(RECIPE, out=tmp_path, overrides=BASE + ["train.epochs=1", "eval=[]", "logging=[mlflow]"])
    client, tracked = mlflow_run(run)
    assert client.tracking_uri == store and tracked.info.status == "FINISHED"
    assert client.get_experiment(tracked.info.experiment_id).name == "polyalign"
    assert [s for s, _ in mlflow_history(client, tracked.info.run_id, "epoch/train_loss")] == [8]


@pytest.mark.parametrize("entry, where, message", [
    ("{plugin: mlflow, tracking_uri: 5}", "logging.1.tracking_uri", "valid string"),
    ("{plugin: mlflow, trackinguri: x}", "logging.1.trackinguri", "Extra inputs are not permitted"),
    ("{plugin: wandb, mode: cloud}", "logging.1.mode", "'online', 'offline' or 'disabled'"),
    ("{tracking_uri: x}", "logging.1.plugin", "Field required"),
    ("{plugin: mlfow}", "logging.1.plugin", "did you mean 'mlflow'"),
    ("5", "logging.1", "a logger is a name (jsonl) or a plugin node"),
])
def test_logger_nodes_are_validated_by_the_loggers_config(entry, where, message):
    with pytest.raises(RecipeError) as err:
        polyalign.load_recipe(RECIPE, [f"logging=[jsonl, {entry}]"])
    assert any(path == where and message in text for path, text in err.value.problems), err.value.problems


def test_plain_names_and_nodes_resolve_to_the_same_logger():
    recipe = polyalign.load_recipe(RECIPE, ["logging=[jsonl, {plugin: mlflow, experiment: e}]"])
    assert recipe.logging[0] == "jsonl"
    assert recipe.logging[1].options() == {"tracking_uri": None, "experiment": "e", "artifact_location": None,
                                           "tags": {}}
    assert [n.plugin for n in recipe.loggers] == ["jsonl", "mlflow"]


@pytest.mark.parametrize("name, module", [("wandb", "wandb"), ("mlflow", "mlflow.tracking")])
def test_a_missing_package_is_a_clear_error(monkeypatch, tmp_path, name, module):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(PolyalignError, match=rf"logger '{name}' needs the {name.split('.')[0]} package.*"
                                             rf"pip install 'polyalign\[{name}\]'"):
        make_plugins().build("logger", name, {"run_dir": tmp_path})
