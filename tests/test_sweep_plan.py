"""``sweep.json`` and sweep files are read through pydantic models: a damaged one is refused naming the file,
the field and what to do."""

from __future__ import annotations

import json

import pytest

from polyalign.core.errors import PolyalignError
from polyalign.sweep.plan import MANIFEST, grid_runs, new_plan, read_plan, read_sweep_file, write_plan


@pytest.fixture
def sweep_dir(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n")
    plan = new_plan(recipe, ["train.epochs=1"], {"loss.plugin": ["clip", "symile"]}, [0, 1])
    write_plan(tmp_path / "sweep", plan)
    return tmp_path / "sweep"


def test_a_written_plan_reads_back_equal(sweep_dir):
    plan = read_plan(sweep_dir)
    assert [r.id for r in plan.runs] == ["loss.plugin=clip/seed-0", "loss.plugin=clip/seed-1",
                                         "loss.plugin=symile/seed-0", "loss.plugin=symile/seed-1"]
    assert plan.runs == grid_runs({"loss.plugin": ["clip", "symile"]}, [0, 1])
    assert json.loads((sweep_dir / MANIFEST).read_text())["version"] == 1


@pytest.mark.parametrize("damage, where, fragment", [
    (lambda raw: raw.pop("seeds"), "seeds", "Field required"),
    (lambda raw: raw["runs"][0].update(id="../outside/seed-0"), "runs.0.id", "should match pattern"),
    (lambda raw: raw["runs"][0].update(id="../seed-0"), "runs.0.id", "outside runs/"),
    (lambda raw: raw["runs"][1].update(seed=-1), "runs.1.seed", "greater than or equal to 0"),
    (lambda raw: raw.update(version=7), "version", "Input should be 1"),
    (lambda raw: raw.update(extra=1), "extra", "Extra inputs are not permitted")])
def test_a_damaged_manifest_is_refused_naming_the_file_the_field_and_what_to_do(sweep_dir, damage, where, fragment):
    path = sweep_dir / MANIFEST
    raw = json.loads(path.read_text())
    damage(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(PolyalignError) as info:
        read_plan(sweep_dir)
    text = str(info.value)
    assert text.startswith(f"{path} is not a sweep manifest polyalign wrote ({where}: ") and fragment in text
    assert "restore it, or start the sweep again with another --out" in text


@pytest.mark.parametrize("sweep, where, fragment", [
    ("{grid: {loss.plugin: []}}", "sweep.grid.loss.plugin", "at least 1 item"),
    ("{seeds: 0}", "sweep.seeds", "greater than or equal to 1"),
    ("{seeds: true}", "sweep.seeds", "valid integer"),
    ("{overrides: [1]}", "sweep.overrides.0", "valid string"),
    ("[1, 2]", "sweep", "valid dictionary")])
def test_a_wrong_sweep_file_names_the_field(tmp_path, sweep, where, fragment):
    path = tmp_path / "r.sweep.yaml"
    path.write_text(f"recipe: r.yaml\nsweep: {sweep}\n")
    with pytest.raises(PolyalignError) as info:
        read_sweep_file(path)
    assert str(info.value).startswith(f"{path}: {where}: ") and fragment in str(info.value)
    assert "A sweep file has `recipe: FILE` (relative to it)" in str(info.value)
