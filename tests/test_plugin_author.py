"""What a plugin author meets: a modality no row provides (refused by validate --check-data and
before training, naming it and what the rows hold), an evaluator with no rows saying why, the
options reference (`polyalign plugins NAME`), intermixed overrides and one-line notices."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import polyalign
from polyalign import cli
from polyalign.cli import main
from polyalign.commands.data_check import check_data
from polyalign.core.errors import Notice, PolyalignError
from polyalign.core.plugin_manager import make_plugins

VECTOR = {"encoder": {"plugin": "vector", "hidden": []}}


class SpectraRows:
    """A dataset that promises ``spectrum`` but whose rows hold ``spectra`` (the author's typo)."""

    name = "spectra_rows"
    modalities = ("smiles", "spectrum")
    root = None

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self._rows = [{"smiles": rng.normal(size=3).tolist(), "spectra": rng.normal(size=4).tolist(), "label": i % 2}
                      for i in range(16)]

    def split(self, name: str) -> list[dict]:
        return self._rows


class SpectraPlugin:
    @polyalign.hookimpl
    def register_datasets(self, register):
        register(SpectraRows)


def _spectra_recipe(plugins):
    raw = {"name": "spectra", "data": {"plugin": "spectra_rows"},
           "modalities": {"smiles": VECTOR, "spectrum": VECTOR}, "loss": {"plugin": "clip"},
           "train": {"epochs": 1, "batch_size": 8}, "eval": [{"plugin": "zero_shot", "target": "spectrum"}]}
    from polyalign.core.recipe import validate_recipe

    return validate_recipe(raw, plugins=plugins)


def test_a_modality_no_row_provides_is_refused_by_validate_and_before_training(tmp_path):
    plugins = make_plugins(extra=[SpectraPlugin()])
    recipe = _spectra_recipe(plugins)
    with pytest.raises(PolyalignError) as info:
        check_data(recipe, plugins)
    message = str(info.value)
    assert message.startswith("modalities.spectrum: no row provides 'spectrum': it is absent from all 16 rows of "
                              "the 'train' split of the dataset (spectra_rows), whose rows provide keys 'smiles', "
                              "'spectra', 'label' (did you mean 'spectra'?)")
    with pytest.raises(PolyalignError, match="no row provides 'spectrum'"):
        polyalign.train(recipe, out=tmp_path, plugins=plugins)
    assert list(tmp_path.iterdir()) == []  # refused before the first step: no run directory left


def _xor_rows(n: int, rng: np.random.Generator, drop: str | None = None) -> list[dict]:
    a, b = rng.integers(0, 2, (n, 3)), rng.integers(0, 2, (n, 3))
    rows = [{"id": f"r{i}", "a": a[i].tolist(), "b": b[i].tolist(), "c": (a[i] ^ b[i]).tolist()} for i in range(n)]
    return [{k: v for k, v in r.items() if k != drop} for r in rows]


def _manifests(folder: Path, drop_from_test: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for split, n in (("train", 48), ("val", 8), ("test", 8)):
        rows = _xor_rows(n, rng, drop_from_test if split == "test" else None)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _recipe_file(tmp_path: Path, data: dict, evaluators: list[dict]) -> Path:
    recipe = {"name": "absent", "data": data, "modalities": {m: VECTOR for m in "abc"}, "loss": {"plugin": "clip"},
              "model": {"embed_dim": 8}, "train": {"epochs": 1, "batch_size": 16, "warmup_steps": 0},
              "eval": evaluators}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_an_evaluator_without_rows_says_why_in_the_report_and_validate_names_the_split(tmp_path, capsys):
    folder = _manifests(tmp_path / "data", drop_from_test="c")
    recipe = _recipe_file(tmp_path, {"plugin": "manifest", "path": str(folder)},
                          [{"plugin": "zero_shot", "target": "c", "query": ["a"]},
                           {"plugin": "zero_shot", "target": "b", "query": ["a"]}])
    assert main(["validate", str(recipe), "--check-data"]) == 2
    captured = capsys.readouterr()
    assert "valid" not in captured.out  # the data check failed: no "valid" line first
    assert "modalities.c: no row provides 'c': it is absent from all 8 rows of the 'test' split" in captured.err
    with pytest.warns(Notice, match=r"eval\.0 \(zero_shot\) produced no rows: 'c' is absent"):
        run = polyalign.train(polyalign.load_recipe(recipe), out=tmp_path / "runs")
    report = (run / "eval" / "report.md").read_text()
    assert "No evaluators in the recipe" not in report
    assert ("- eval.0 (zero_shot) produced no rows: 'c' is absent from every one of the 8 rows of the 'test' "
            "split, whose rows provide keys 'a', 'b', 'id'") in report
    assert "## zero_shot" in report and "| b | a | " in report  # the other evaluator's rows are there


def test_webdataset_extension_matching_no_member_names_the_members(tmp_path, capsys):
    pytest.importorskip("webdataset")
    from polyalign.plugins.datasets.shards import write_shards

    write_shards(_manifests(tmp_path / "data"), tmp_path / "shards", 16)
    data = {"plugin": "webdataset", "path": str(tmp_path / "shards"),
            "modalities": {"a": "a.json", "b": "b.json", "c": "npy"}}
    recipe = _recipe_file(tmp_path, data, [])
    assert main(["validate", str(recipe), "--check-data"]) == 2
    captured = capsys.readouterr()
    assert "valid" not in captured.out
    err = " ".join(captured.err.split())
    assert "modalities.c: no row provides 'c': it is absent from all 48 rows of the 'train' split" in err
    assert "whose rows provide shard members .a.json, .b.json, .c.json, .id.txt (data.modalities maps a: .a.json, " \
           "b: .b.json, c: .npy;" in err


def test_overrides_may_follow_options(tmp_path, xor_clip, capsys):
    args = cli.parser().parse_args(["train", "R", "--out", "D", "k=v", "x.y=1"])
    assert (args.recipe, args.out, args.overrides) == ("R", "D", ["k=v", "x.y=1"])
    args = cli.parser().parse_args(["cache", "R", "--debug", "k=v"])
    assert (args.recipe, args.overrides, args.debug) == ("R", ["k=v"], True)
    assert main(["validate", str(xor_clip), "--print", "model.embed_dim=12", "train.epochs=3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out.split("\n" + str(xor_clip))[0])
    assert (printed["model"]["embed_dim"], printed["train"]["epochs"]) == (12, 3)


def test_plugins_name_prints_the_options_and_the_listing_names_the_extra(capsys):
    assert main(["plugins", "vector"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("encoder vector (plugin polyalign:encoders): MLP over fixed-size float vectors")
    assert "  dim: int | None = null, > 0  -- input size; default: from the data" in out
    assert main(["plugins", "webdataset"]) == 0
    out = capsys.readouterr().out
    assert ("  modalities: dict[str, str | list[str]] = {'image': 'jpg;jpeg;png;webp', 'text': 'txt'}, "
            "length >= 1") in out
    assert "  sources.weight: float = 1.0, > 0" in out  # a nested model's options
    assert main(["plugins", "clip", "--json"]) == 0
    (clip,) = json.loads(capsys.readouterr().out)
    assert (clip["kind"], clip["options"][0]) == ("loss", {
        "name": "temperature", "type": "float", "default": "0.07", "constraints": ">= 0.01, <= 1.0",
        "description": "initial temperature τ, in [0.01, 1] (1/τ is kept in [1, 100])"})
    assert main(["plugins", "vectr"]) == 2
    assert "did you mean 'vector'?" in capsys.readouterr().err
    assert main(["plugins"]) == 0
    assert "pip install 'polyalign[mlflow]'" in " ".join(capsys.readouterr().out.split())


def test_a_notice_is_one_line_without_the_source(capsys):
    others = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = cli.notices_as_lines(lambda *args: others.append(args[0]))
        warnings.warn(Notice("retrieval: tuple targets are left out"), stacklevel=1)
        warnings.warn("a library's own warning", stacklevel=1)
    assert capsys.readouterr().err == "note: retrieval: tuple targets are left out\n"
    assert [str(w) for w in others] == ["a library's own warning"]


def test_every_built_in_option_is_described():
    from polyalign.commands.options_reference import options
    from polyalign.core.plugin_manager import default_plugins
    from polyalign.core.registry import KINDS

    registry = default_plugins().registry
    bare = [f"{kind} {c.name}: {o.name}" for kind in KINDS for c in registry.components(kind)
            if c.plugin.startswith("polyalign:") for o in options(c.config) if not o.description]
    assert bare == []


def test_plugins_name_the_install_command_of_a_missing_module(monkeypatch, capsys):
    from polyalign.core import requirements

    monkeypatch.setattr(requirements, "is_installed", lambda module: module != "mlflow")
    assert main(["plugins"]) == 0
    listing = " ".join(capsys.readouterr().out.replace("│", " ").split())  # the table's cells, wrapped
    assert listing.count("not installed: pip install 'polyalign[mlflow]'") == 1
    assert main(["plugins", "mlflow"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("\n  not installed: pip install 'polyalign[mlflow]'")
