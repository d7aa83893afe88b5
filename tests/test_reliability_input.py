"""Bad input: broken recipes get one clear message naming the YAML path (never a traceback);
random YAML never crashes `polyalign validate`; truncated data files are reported with their path."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polyalign
from polyalign.cli import main
from polyalign.core.data import DataError, TupleDataset
from polyalign.core.device import device_problem
from polyalign.core.errors import MAX_MESSAGE_CHARS
from polyalign.core.memory import bytes_text, physical_memory
from polyalign.core.recipe import modality_name_problem
from polyalign.files.yaml_file import MAX_EXPANDED_CHARS, MAX_NODES, MAX_TEXT_CHARS, YamlError, parse_yaml
from polyalign.shipped import shipped_recipes

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "recipes" / "xor-clip.yaml"
TINY = ["data.n_train=128", "data.n_val=32", "data.n_test=32", "train.batch_size=32", "train.epochs=1"]




def _cli(capsys, *argv: str) -> tuple[int, str]:
    """Run the CLI in this process; any exception escaping it fails the test (a traceback)."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _assert_clear(code: int, err: str, path: str, fragment: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and 'File "' not in err
    assert err.startswith("error:") and "\n\n" not in err.strip()  # one paragraph
    assert path in err, f"{path!r} not in: {err}"
    assert fragment in err, f"{fragment!r} not in: {err}"


# ------------------------------------------------------------------ shipped recipes
@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_validates(name, capsys):
    code = main(["validate", name])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"{name}: valid" in out.out


# ------------------------------------------------------------------ broken recipes (overrides)
# (case, overrides, YAML path named, fragment of the message)
BROKEN = [
    ("wrong type: int", ["train.batch_size=many"], "train.batch_size", "valid integer"),
    ("wrong type: plugin option", ["modalities.a.encoder.hidden=[wide]"], "modalities.a.encoder.hidden.0", "valid integer"),
    ("wrong type: bool", ["train.deterministic=maybe"], "train.deterministic", "valid boolean"),
    ("wrong type: list for int", ["model.embed_dim=[16]"], "model.embed_dim", "valid integer"),
    ("wrong type: string for list", ["eval=zero_shot"], "eval", "valid list"),
    ("wrong type: list for mapping", ["modalities=[a, b]"], "modalities", "valid dictionary"),
    ("wrong type: loss as a name", ["loss=clip"], "loss", "must be a plugin node"),
    ("wrong type: plugin name list", ["loss.plugin=[clip]"], "loss.plugin", "valid string"),
    ("wrong type: NaN float", ["train.lr=.nan"], "train.lr", "finite number"),
    ("wrong type: Inf float", ["train.lr=.inf"], "train.lr", "finite number"),
    ("bad enum", ["train.precision=fp8"], "train.precision", "'auto', 'fp32', 'bf16' or 'fp16'"),
    ("fp16 with fsdp", ["train.precision=fp16", "train.strategy=fsdp"], "train.precision", "use bf16 with fsdp"),
    ("bad device", ["train.device=tpu"], "train.device", "is not a device"),
    ("bad name", ["name=my run"], "name", "should match pattern"),
    ("unknown loss", ["loss.plugin=clpi"], "loss.plugin", "did you mean 'clip'"),
    ("unknown encoder", ["modalities.b.encoder.plugin=vectr"], "modalities.b.encoder.plugin", "did you mean 'vector'"),
    ("unknown dataset", ["data.plugin=xorr"], "data.plugin", "unknown dataset 'xorr'"),
    ("unknown evaluator", ["eval.0.plugin=zeroshot"], "eval.0.plugin", "did you mean 'zero_shot'"),
    ("unknown logger", ["logging=[jsonl, nope]"], "logging.1", "unknown logger 'nope'"),
    ("unknown plugin in a loss list", ["loss=[{plugin: clip}, {plugin: nope}]"], "loss.1.plugin", "unknown loss 'nope'"),
    ("dotted import path as loss", ["loss.plugin=os.system"], "loss.plugin", "unknown loss 'os.system'"),
    ("dotted import path as encoder", ["modalities.a.encoder.plugin=torch.nn.Linear"],
     "modalities.a.encoder.plugin", "unknown encoder 'torch.nn.Linear'"),
    ("dotted import path as dataset", ["data.plugin=builtins.eval"], "data.plugin", "unknown dataset"),
    ("unknown top-level key", ["trian={epochs: 1}"], "trian", "Extra inputs are not permitted"),
    ("unknown section key", ["train.epoch=3"], "train.epoch", "Extra inputs are not permitted"),
    ("unknown loss option", ["loss.tempreature=0.1"], "loss.tempreature", "Extra inputs are not permitted"),
    ("unknown encoder option", ["modalities.a.encoder.hiden=[4]"], "modalities.a.encoder.hiden", "Extra inputs"),
    ("unknown modality key", ["modalities.a.encodr={plugin: vector}"], "modalities.a.encodr", "Extra inputs"),
    ("unknown evaluator option", ["eval.0.targt=b"], "eval.0.targt", "Extra inputs are not permitted"),
    ("negative batch size", ["train.batch_size=-1"], "train.batch_size", "greater than or equal to 1"),
    ("negative embed_dim", ["model.embed_dim=-16"], "model.embed_dim", "greater than 0"),
    ("zero epochs", ["train.epochs=0"], "train.epochs", "greater than or equal to 1"),
    ("negative dataset size", ["data.n_train=-5"], "data.n_train", "greater than or equal to 1"),
    ("negative lr", ["train.lr=-0.1"], "train.lr", "greater than 0"),
    ("negative temperature", ["loss.temperature=-1"], "loss.temperature", "greater than or equal to 0.01"),
    ("negative loss weight", ["loss=[{plugin: clip, weight: -1}]"], "loss.0.weight", "greater than or equal to 0"),
    ("zero keep_last", ["train.keep_last=0"], "train.keep_last", "greater than or equal to 1"),
    ("negative seed", ["seed=-1"], "seed", "greater than or equal to 0"),
    ("dropout rate out of range", ["missing.train_rate={a: 1.5}"], "missing.train_rate", "must be in [0, 1)"),
    ("probability out of range", ["data.p_hat=2"], "data.p_hat", "less than or equal to 1"),
    ("eval target does not exist", ["eval.0.target=d"], "eval.0.target", "modality 'd' is not in modalities"),
    ("eval query does not exist", ["eval.0.query=[a, z]"], "eval.0.query", "modality 'z' is not in modalities"),
    ("loss anchor does not exist", ["loss={plugin: clip, pairs: star, anchor: z}"], "loss.anchor",
     "modality 'z' is not in modalities"),
    ("dropout for a missing modality", ["missing.train_rate={z: 0.1}"], "missing.train_rate.z", "not in modalities"),
    ("one modality only", ["modalities={a: {encoder: {plugin: vector}}}", "eval=[]"], "modalities",
     "needs at least 2 modalities"),
    ("override without =", ["train.lr"], "train.lr", "must look like key.path=value"),
    ("override index out of range", ["eval.5.target=a"], "eval.5.target", "not an index"),
    ("override into a list item", ["eval.0.query.0.x=1"], "eval.0.query.0.x", "eval.0.query.0 is not a mapping"),
    ("override of a scalar by a mapping", ["seed.x=1"], "seed", "valid integer"),
]


@pytest.mark.parametrize("case, overrides, path, fragment", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_recipe_gets_one_clear_message(case, overrides, path, fragment, capsys):
    _assert_clear(*_cli(capsys, "validate", XOR, *overrides), path, fragment)


# ------------------------------------------------------------------ broken recipe files
BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] +
                 [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)])
FILES = [
    ("empty file", "", "<root>", "must be a YAML mapping, got NoneType"),
    ("a list", "- a\n- b\n", "<root>", "must be a YAML mapping, got list"),
    ("YAML syntax error", "name: x\nloss: {plugin: clip\n", "<root>", "not valid YAML"),
    ("tab indentation", "name: x\n\tloss: 1\n", "<root>", "not valid YAML"),
    ("python object tag", "name: !!python/object/apply:os.system ['touch {marker}']\n", "<root>",
     "could not determine a constructor"),
    ("python name tag", "data: !!python/name:os.system\n", "<root>", "could not determine a constructor"),
    ("deep nesting", "x: " + "[" * 1200 + "]" * 1200 + "\n", "<root>", "nested too deeply"),
    ("deep but parseable nesting", "x: " + "[" * 80 + "]" * 80 + "\n", "x: nested", "more than 64 levels deep"),
    ("self-referencing alias", "data: &d {plugin: xor, n: [*d]}\n", "data.n.0", "contains itself"),
    ("billion laughs", BOMB + "\nname: *a6\n", "name: more than 100000 values", "YAML aliases count"),
    ("missing data and loss", "name: x\nmodalities: {a: {encoder: {plugin: vector}}, b: {encoder: {plugin: vector}}}\n",
     "data", "Field required"),
    ("not UTF-8", b"\xff\xfename: x\n", "<root>", "not a UTF-8 text file"),
]


@pytest.mark.parametrize("case, text, path, fragment", FILES, ids=[f[0] for f in FILES])
def test_broken_recipe_file_gets_one_clear_message(case, text, path, fragment, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    recipe = tmp_path / "broken.yaml"
    if isinstance(text, bytes):
        recipe.write_bytes(text)
    else:
        recipe.write_text(text.replace("{marker}", str(marker)))
    _assert_clear(*_cli(capsys, "validate", recipe), path, fragment)
    assert not marker.exists()


def test_missing_recipe_file(tmp_path, capsys):
    _assert_clear(*_cli(capsys, "validate", tmp_path / "nope.yaml"), "nope.yaml", "file not found")


def test_unreadable_recipe_file(tmp_path, capsys, monkeypatch):
    recipe = tmp_path / "secret.yaml"
    recipe.write_text(XOR.read_text())

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", denied)
    _assert_clear(*_cli(capsys, "validate", recipe), "secret.yaml", "cannot read the file: Permission denied")


# ------------------------------------------------------------------ problems only the data shows
def test_vector_dim_that_the_data_does_not_have(tmp_path, capsys):
    _assert_clear(*_cli(capsys, "train", XOR, *TINY, "modalities.a.encoder.dim=7", "--out", tmp_path),
                  "modalities.a.encoder (vector)", "expected a vector of 7 numbers, got 5")
    assert not list(tmp_path.iterdir())  # refused before training, and no half run directory is left


def test_modality_the_data_lacks(tmp_path, capsys):
    _assert_clear(*_cli(capsys, "train", XOR, *TINY, "modalities.d={encoder: {plugin: vector}}",
                        "eval.0.target=d", "--out", tmp_path),
                  "modalities.d", "the dataset (xor) has no modality 'd'; it provides: a, b, c")


def test_embed_dim_changed_on_resume(tmp_path, capsys):
    run = polyalign.train(XOR, out=tmp_path, overrides=TINY)
    _assert_clear(*_cli(capsys, "train", "--resume", run, "model.embed_dim=32"),  # refused as an override
                  "model.embed_dim cannot change when a run is resumed", "polyalign train ")
    recipe = run / "recipe.yaml"  # and caught by the checkpoint when recipe.yaml is edited by hand
    recipe.write_text(recipe.read_text().replace("embed_dim: 16", "embed_dim: 32"))
    _assert_clear(*_cli(capsys, "train", "--resume", run),
                  "model.heads.a.weight is (16, 5) in the checkpoint but (32, 5) here", "model.embed_dim")


# ------------------------------------------------------------------ size bombs
def _fan(size: int, fan: int, levels: int) -> str:
    """YAML whose last key expands to ``size * fan**levels`` characters in ``fan**levels`` strings."""
    lines = [f"l0: &l0 {'x' * size}"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@settings(max_examples=80, deadline=None)
@given(size=st.integers(1, 20_000), fan=st.integers(1, 40), levels=st.integers(0, 5))
def test_yaml_is_refused_exactly_when_it_expands_past_the_bounds(size, fan, levels):
    """Aliases may not expand a YAML text past MAX_EXPANDED_CHARS characters or MAX_NODES values,
    however small the text; within both bounds it loads."""
    text = _fan(size, fan, levels)
    values = [1]  # values in level i's expansion: a list of ``fan`` copies of level i-1 (level 0: the string)
    for _ in range(levels):
        values.append(1 + fan * values[-1])
    nodes = 1 + sum(1 + v for v in values)  # the root mapping, then each key and its value's expansion
    chars = sum(len(f"l{i}") + size * fan ** i for i in range(levels + 1))
    if nodes > MAX_NODES or chars > MAX_EXPANDED_CHARS:
        with pytest.raises(YamlError, match="more than"):
            parse_yaml(text, "t.yaml")
    else:
        assert parse_yaml(text, "t.yaml")["l0"] == "x" * size


def _bomb_text(size: int = 10_000, repeats: int = 2000) -> str:
    return f"s: &s {'x' * size}\nl: [{', '.join(['*s'] * repeats)}]\n"


@pytest.mark.parametrize("where", ["recipe file", "override", "run recipe.yaml", "export recipe.yaml",
                                   "model card", "eval --add"])
def test_every_yaml_reader_refuses_an_alias_bomb(where, tmp_path, capsys):
    """The bounds hold wherever polyalign reads YAML, not only for the recipe given to train/validate."""
    bomb = _bomb_text()
    run = polyalign.train(XOR, out=tmp_path, overrides=TINY) if "run" in where or "export" in where or \
        "card" in where or "add" in where else None
    if where == "recipe file":
        argv = ["validate", tmp_path / "r.yaml"]
        (tmp_path / "r.yaml").write_text(bomb)
    elif where == "override":
        argv = ["validate", XOR, "description={" + bomb.replace("\n", ", ") + "}"]
    elif where == "run recipe.yaml":
        (run / "recipe.yaml").write_text(bomb)
        argv = ["eval", run]
    elif where == "eval --add":
        argv = ["eval", run, "--add", "{plugin: zero_shot, " + bomb.replace("\n", ", ") + "}"]
    else:
        from polyalign.inference.export import export_model

        export = export_model(run, tmp_path / "export")
        if where == "export recipe.yaml":
            (export / "recipe.yaml").write_text(bomb)
        else:
            (export / "MODEL_CARD.md").write_text(f"---\n{bomb}---\n")
        argv = ["embed", export, "--modality", "b", "--input", XOR, "--out", tmp_path / "e.safetensors"]
    code, err = _cli(capsys, *argv)
    assert code == 2 and "more than 1000000 characters of text once YAML aliases are expanded" in err, err
    assert len(err) < 2000


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.integers(1, 50_000), copies=st.integers(1, 400), where=st.sampled_from(
    ["logging", "loss.plugin", "train", "modalities", "eval.0.target"]))
def test_error_messages_are_bounded_whatever_is_echoed(length, copies, where, capsys):
    """A long value, or many of them, echoed in an error never makes it longer than MAX_MESSAGE_CHARS."""
    value = "v" * length
    override = {"logging": f"logging=[{', '.join([value] * copies)}]", "loss.plugin": f"loss.plugin={value}",
                "train": f"train.{value}=1", "modalities": f"modalities.{value}-x={{encoder: {{plugin: vector}}}}",
                "eval.0.target": f"eval.0.target={value}"}[where]
    if len(override) > MAX_TEXT_CHARS:
        return
    code, err = _cli(capsys, "validate", XOR, override)
    assert code == 2 and err.startswith("error:")
    assert len(err) <= MAX_MESSAGE_CHARS + 200, len(err)


# ------------------------------------------------------------------ what validate refuses before anything starts
@settings(max_examples=200, deadline=None)
@given(name=st.one_of(st.text(max_size=12), st.sampled_from(
    ["eval", "type", "to", "cuda", "train", "forward", "keys", "items", "pop", "update", "_modules", "__class__",
     "a.b", "", "a-b", "label", "id", "all", "image", "x_1", "B2"])))
def test_a_modality_name_validate_accepts_can_build_the_model(name):
    """Every name validate accepts keys the model's module and parameter dicts (which refuse '', dots and
    their own attribute names) and makes unambiguous metric names; every other one is refused with the reason."""
    from polyalign.core.model import MultiModalModel
    from polyalign.plugins.encoders.vector import VectorEncoder

    problem = modality_name_problem(name)
    if problem is None:
        names = [name, "other_" if name != "other_" else "other2"]
        model = MultiModalModel({m: VectorEncoder(3, []) for m in names}, 4, missing="learned")
        assert set(model.encoders) == set(names) and set(model.missing_embeddings) == set(names)
        assert "-" not in name and "." not in name and name not in ("all", "label", "id")
    else:
        assert "cannot name a modality" in problem


@pytest.mark.parametrize("name, fragment", [
    ("a.b", "letters, digits and underscores"), ("eval", "attribute of PyTorch's ModuleDict"),
    ("type", "attribute of PyTorch's ModuleDict"), ("a-b", "letters, digits and underscores"),
    ("label", "reserved"), ("all", "reserved")])
def test_modality_names_pytorch_or_polyalign_cannot_use_are_refused(name, fragment, capsys):
    mods = f"modalities={{'{name}': {{encoder: {{plugin: vector}}}}, c: {{encoder: {{plugin: vector}}}}}}"
    _assert_clear(*_cli(capsys, "validate", XOR, mods, "eval=[]"), f"modalities.{name}", fragment)


@pytest.mark.parametrize("device, fragment", [
    ("meta", "polyalign does not run on 'meta' devices"), ("xla", "polyalign does not run on 'xla'"),
    ("hpu", "polyalign does not run on 'hpu'"), ("mps", "MPS is not available"), ("xpu", "no Intel XPU"),
    ("cuda:-1", "is not a device")])
def test_devices_this_torch_cannot_use_are_refused_by_validate(device, fragment, capsys):
    if device in ("mps", "xpu") and device_problem(device) is None:
        pytest.skip(f"this machine has {device}")
    _assert_clear(*_cli(capsys, "validate", XOR, f"train.device={device}"), "train.device", fragment)


def test_a_missing_cuda_device_is_refused_before_a_run_directory_exists(tmp_path, capsys):
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has cuda:7")
    _assert_clear(*_cli(capsys, "train", XOR, *TINY, "train.device=cuda:7", "--out", tmp_path), "train.device",
                  "cuda:7")
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


SEVEN = "modalities={" + ", ".join(f"{m}: {{encoder: {{plugin: vector}}}}" for m in "abcdefg") + "}"


@pytest.mark.parametrize("overrides, path, number", [
    ([SEVEN, "loss={plugin: symile, negatives: n_squared}", "eval=[]"], "loss", "256^5 = 1.1e+12 log-sum-exps"),
    (["model.embed_dim=1000000000000"], "model.embed_dim", "1000000000000 dimensions x 3 modalities"),
    (["data.n_train=1000000000000"], "data", "1000000002000 tuples generated in memory x 1200 bytes")])
def test_configurations_that_cannot_fit_in_memory_are_refused_with_the_estimate(overrides, path, number, capsys):
    code, err = _cli(capsys, "validate", XOR, *overrides)
    _assert_clear(code, err, path, number)
    assert f"this machine has {bytes_text(physical_memory())}" in err


def test_memory_estimates_do_not_refuse_what_fits(capsys):
    four = "modalities={" + ", ".join(f"{m}: {{encoder: {{plugin: vector}}}}" for m in "abcd") + "}"
    code, err = _cli(capsys, "validate", XOR, four, "loss={plugin: symile}", "eval=[]", "model.embed_dim=4096")
    assert code == 0, err


@pytest.mark.parametrize("overrides, path, fragment", [
    (["loss=[]"], "loss", "an empty list; give at least one loss plugin"),
    (["eval=[{plugin: missing_modality, resamples: 1000000000000}]"], "eval.0.resamples", "less than or equal to")])
def test_settings_that_cannot_run_are_refused(overrides, path, fragment, capsys):
    _assert_clear(*_cli(capsys, "validate", XOR, *overrides), path, fragment)


def test_accumulate_past_the_batches_of_an_epoch_is_refused_before_training(tmp_path, capsys):
    _assert_clear(*_cli(capsys, "train", XOR, *TINY, "train.accumulate=8", "--out", tmp_path), "train.accumulate",
                  "an epoch of the train split (128 rows) has only 4 batch(es) of 32: no optimizer step would ever run")
    assert not list(tmp_path.iterdir())


def test_a_recipe_file_without_name_takes_a_valid_one_from_its_file_name(tmp_path, capsys):
    recipe = tmp_path / "my recipe (copy).yaml"
    recipe.write_text(XOR.read_text().replace("name: xor-clip\n", ""))
    assert polyalign.load_recipe(recipe).name == "my-recipe-copy"
    code, err = _cli(capsys, "validate", recipe)
    assert code == 0, err


# ------------------------------------------------------------------ empty splits
def _only_train_manifest(folder: Path, evaluators: str) -> list[str]:
    (folder / "data").mkdir()
    (folder / "data" / "train.jsonl").write_text("".join(json.dumps({"a": [i % 2, 1.0], "b": [1.0, i % 3]}) + "\n"
                                                         for i in range(32)))
    return [XOR, "data={plugin: manifest, path: " + str(folder / "data") + "}",
            "modalities={a: {encoder: {plugin: vector}}, b: {encoder: {plugin: vector}}}", "train.batch_size=16",
            "train.epochs=1", f"eval={evaluators}"]


def test_an_empty_test_split_with_evaluators_is_refused_before_training(tmp_path, capsys):
    recipe = _only_train_manifest(tmp_path, "[{plugin: zero_shot, target: b}]")
    _assert_clear(*_cli(capsys, "train", *recipe, "--out", tmp_path / "runs"), "eval",
                  "the 'manifest' dataset's test split is empty, so there is nothing to evaluate")
    assert not list((tmp_path / "runs").iterdir())
    run = polyalign.train(recipe[0], out=tmp_path / "runs", overrides=recipe[1:-1] + ["eval=[]"])  # no evaluator: fine
    _assert_clear(*_cli(capsys, "eval", run, "--add", "{plugin: zero_shot, target: b}"), "eval", "nothing to evaluate")


def test_embedding_an_empty_split_gives_empty_tensors(tmp_path):
    from polyalign.core.assemble import assemble
    from polyalign.core.evaluator import embed_split

    recipe = _only_train_manifest(tmp_path, "[]")
    parts = assemble(polyalign.load_recipe(recipe[0], recipe[1:]))
    emb, present = embed_split(parts, "test", torch.device("cpu"))
    assert {m: tuple(z.shape) for m, z in emb.items()} == {"a": (0, 16), "b": (0, 16)}
    assert all(p.dtype == torch.bool and p.numel() == 0 for p in present.values())


# ------------------------------------------------------------------ random YAML
_BASES = [yaml.safe_load(p.read_text()) for p in shipped_recipes().values()]
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["clip", "symile", "vector", "xor", "zero_shot", "a", "b", "c", "all", "jsonl", "l2", "-1",
                     "1e-3", "os.system", "", "auto", "cuda", "star", "full"]))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.one_of(st.text(max_size=8), st.sampled_from(["plugin", "encoder", "weight", "target", "query", "dim",
                                                        "hidden", "embed_dim", "epochs", "anchor"])),
        inner, max_size=4),
    max_leaves=12)


def _paths(node, prefix=()):
    yield prefix
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in children:
        yield from _paths(child, prefix + (key,))


@st.composite
def mutated_recipes(draw) -> str:
    """A shipped recipe with 1-4 random edits: a value replaced, a key deleted or a key added."""
    raw = copy.deepcopy(draw(st.sampled_from(_BASES)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(raw) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = raw
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["set", "delete", "add"]))
        if action == "set":
            parent[path[-1]] = draw(_VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(_VALUES)
        else:
            parent.append(draw(_VALUES))
    return yaml.safe_dump(raw, allow_unicode=True)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.one_of(mutated_recipes(), mutated_recipes(), st.text(max_size=300)))
def test_random_yaml_validates_or_fails_clearly(text, tmp_path_factory):
    recipe = tmp_path_factory.mktemp("fuzz") / "r.yaml"
    recipe.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(recipe)])  # an exception here fails the test
    assert code in (0, 2)
    if code == 2:
        assert err.getvalue().startswith("error:") and "Traceback" not in err.getvalue()


# ------------------------------------------------------------------ truncated data files
def _truncate(path: Path, keep: int | None = None) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])
    return path


def _write_npy(path: Path, arr: np.ndarray) -> None:
    np.save(path, arr)


def _write_png(path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)


def _write_jpeg(path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path, "JPEG")


def _write_audio(path: Path) -> None:
    import soundfile as sf

    sf.write(path, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)


def _write_wfdb(path: Path) -> None:
    import wfdb

    wfdb.wrsamp(path.name, fs=500, units=["mV", "mV"], sig_name=["I", "II"], fmt=["16", "16"],
                p_signal=np.random.default_rng(0).normal(size=(1000, 2)), write_dir=str(path.parent))


# (encoder, options, file written, value in the sample, file truncated, how it is written)
TRUNCATED = [
    ("vector", {"dim": 5}, "v.npy", "v.npy", "v.npy", lambda p: _write_npy(p, np.arange(5, dtype=np.float32))),
    ("image", {"model": "test_resnet", "image_size": 32}, "i.png", "i.png", "i.png", _write_png),
    ("image", {"model": "test_resnet", "image_size": 32}, "i.jpg", "i.jpg", "i.jpg", _write_jpeg),
    ("audio", {}, "a.wav", "a.wav", "a.wav", _write_audio),
    ("audio", {}, "a.flac", "a.flac", "a.flac", _write_audio),
    ("ecg", {"leads": 12, "length": 500}, "e.npy", "e.npy", "e.npy",
     lambda p: _write_npy(p, np.ones((12, 500), dtype=np.float32))),
    ("ecg", {"leads": 2, "length": 1000}, "rec", "rec", "rec.dat", _write_wfdb),
    ("tabular", {"columns": ["x", "y"]}, "t.json", "t.json", "t.json",
     lambda p: p.write_text(json.dumps({"x": 1.5, "y": 2.5}))),
    ("tabular", {"dim": 4}, "t.npy", "t.npy", "t.npy", lambda p: _write_npy(p, np.arange(4.0))),
    ("byte_text", {}, "s.txt", "s.txt", "s.txt", lambda p: p.write_bytes("héllo wörld".encode())),
]


@pytest.mark.parametrize("encoder, options, written, value, truncated, write", TRUNCATED,
                         ids=[f"{t[0]}-{t[2]}" for t in TRUNCATED])
def test_truncated_file_is_reported_with_its_path(encoder, options, written, value, truncated, write, tmp_path):
    from polyalign.core.plugin_manager import default_plugins

    if encoder not in default_plugins().registry.names("encoder"):
        pytest.skip(f"no {encoder} encoder registered")
    write(tmp_path / written)
    enc = polyalign.build("encoder", encoder, **options)
    data = TupleDataset([{"m": value}], {"m": enc.load}, tmp_path, "train", "manifest")
    data[0]  # the intact file loads
    _truncate(tmp_path / truncated, keep=2 if truncated.endswith(".txt") else None)  # .txt: mid-character
    with pytest.raises(DataError) as info:
        data[0]
    msg = str(info.value)
    assert "split 'train', row 0, modality 'm'" in msg
    shown = tmp_path / (value if truncated != "rec.dat" else "rec")
    assert str(shown) in msg, msg


_KEYS = st.lists(st.one_of(st.sampled_from(["train", "data", "loss", "eval", "modalities", "a", "b", "0", "1",
                                            "plugin", "encoder", "hidden", "target", "query", "lr", "weight",
                                            "missing", "train_rate", "model", "embed_dim", "logging"]),
                           st.text(max_size=4)), min_size=1, max_size=5).map(".".join)
_RAW_VALUES = st.one_of(st.text(max_size=20), st.sampled_from(
    ["[", "{", "]]", "{a: [1, {b: 2}]}", ".nan", "-1", "~", "!!python/name:os.system", "*x", "&x [*x]",
     "[{plugin: clip}, {plugin: symile}]"]))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(overrides=st.lists(st.one_of(st.tuples(_KEYS, _RAW_VALUES).map("=".join), st.text(max_size=10)),
                          min_size=1, max_size=3))
def test_random_overrides_validate_or_fail_clearly(overrides):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(XOR), "--", *overrides])
    assert code in (0, 2)
    if code == 2:
        assert err.getvalue().startswith("error:") and "Traceback" not in err.getvalue()
