"""The example package examples/polyalign-imu, found through real entry-point discovery.

Instead of `pip install -e examples/polyalign-imu` (slow), the test puts the package's source
and a dist-info folder holding its entry_points.txt on sys.path: importlib.metadata then finds
the `polyalign` entry point exactly as it would for an installed distribution. The package's
own tests (examples/polyalign-imu/tests) run here too, through that entry point.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import json
import runpy
import sys

import pytest
import tomllib
from conftest import ROOT

import polyalign
from polyalign.core.plugin_manager import default_plugins, describe

EXAMPLE = ROOT / "examples" / "polyalign-imu"
EXAMPLE_TESTS = sorted((EXAMPLE / "tests").glob("test_*.py"))


def example_tests() -> list[tuple[str, str]]:
    """(file, function) for every test function of the example package."""
    return [(path.name, node.name) for path in EXAMPLE_TESTS for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


@pytest.fixture
def imu_installed(tmp_path, monkeypatch):
    """The example's distribution metadata and source on sys.path, with fresh plugins."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    dist_info = tmp_path / "site" / f"polyalign_imu-{project['version']}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                        f"Version: {project['version']}\n")
    points = project["entry-points"]["polyalign"]
    (dist_info / "entry_points.txt").write_text("[polyalign]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    default_plugins.cache_clear()
    yield
    default_plugins.cache_clear()
    for name in [m for m in sys.modules if m.startswith("polyalign_imu")]:
        del sys.modules[name]


def test_entry_point_registers_the_imu_encoder_loss_dataset_and_evaluator(imu_installed):
    listing = describe(default_plugins())
    (info,) = [p for p in listing["plugins"] if p["name"] == "imu"]
    assert info == {"name": "imu", "distribution": "polyalign-imu", "version": "0.1.0", "builtin": False,
                    "error": None}
    for kind, name in (("encoders", "imu"), ("losses", "margin_clip"), ("datasets", "tuple_folders"),
                       ("evaluators", "modality_gap")):
        (component,) = [c for c in listing[kind] if c["name"] == name]
        assert component["plugin"] == "polyalign-imu:imu" and component["help"]


@pytest.mark.parametrize("file, name", example_tests())
def test_the_example_package_tests_pass(imu_installed, tmp_path, file, name):
    test = runpy.run_path(str(EXAMPLE / "tests" / file))[name]
    test(**{"tmp_path": tmp_path} if "tmp_path" in inspect.signature(test).parameters else {})


def test_recipe_trains_imu_with_a_builtin_modality(imu_installed, tmp_path):
    make_data = runpy.run_path(str(EXAMPLE / "make_data.py"))
    data = make_data["write_toy_data"](tmp_path / "data", n_train=48, n_val=16, n_test=16)
    run = polyalign.train(EXAMPLE / "imu-caption.yaml", out=tmp_path / "runs",
                          overrides=[f"data.path={data}", "train.epochs=4", "train.batch_size=16",
                                     "train.log_every=1", "train.warmup_steps=0"])
    epochs = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
    assert len(epochs) == 4 and epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    report = json.loads((run / "eval" / "report.json").read_text())
    assert {(r["target"], tuple(r["query"]), r["metric"]) for r in report} >= {("caption", ("imu",), "accuracy")}


def test_without_the_plugin_the_recipe_names_the_missing_encoder(tmp_path):
    try:
        importlib.metadata.distribution("polyalign-imu")
        pytest.skip("polyalign-imu is installed in this environment")
    except importlib.metadata.PackageNotFoundError:
        pass
    default_plugins.cache_clear()
    with pytest.raises(polyalign.core.errors.RecipeError, match="unknown encoder 'imu'"):
        polyalign.load_recipe(EXAMPLE / "imu-caption.yaml")


@pytest.mark.parametrize("name", ["pyproject.toml", "src/polyalign_imu/__init__.py", "src/polyalign_imu/encoder.py",
                                  "make_data.py", "imu-caption.yaml", "tests/test_imu.py",
                                  "src/polyalign_imu/loss.py", "tests/test_loss.py",
                                  "src/polyalign_imu/dataset.py", "tests/test_dataset.py",
                                  "src/polyalign_imu/evaluator.py", "tests/test_evaluator.py",
                                  "imu-caption-folders.yaml"])
def test_tutorial_shows_each_file_of_the_example_whole(name):
    tutorial = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    assert (EXAMPLE / name).read_text() in tutorial, f"docs/writing-a-plugin.md is out of date for {name}"
