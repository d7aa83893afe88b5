"""Round three (issue 22): what is read or expanded is bounded before it is, every JSON goes
through one bounded reader, and errors name what they are about. The CLI side of each is in the
hostile corpus (tests/hostile_corpus_three.py); these test the pieces directly."""

from __future__ import annotations

import json
import re
import resource
import signal
import tarfile
import tracemalloc

import pytest
import torch
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

import polyalign
from polyalign.core.errors import PolyalignError
from polyalign.files.json_file import MAX_DEPTH, JsonError, nesting, parse_json, read_json
from polyalign.plugins.datasets.brace_count import count_expansions
from polyalign.training.feature_cache import FeatureLookup
from polyalign.training.input_cache import value_key
from polyalign.training.tensor_store import TensorStore

XOR = ROOT / "recipes" / "xor-clip.yaml"


def test_every_json_polyalign_reads_goes_through_the_bounded_reader():
    """A guard on the code base: no ``json.load``/``json.loads`` outside ``files/json_file.py``."""
    bad = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sorted((ROOT / "polyalign").rglob("*.py"))
           if p.name != "json_file.py" for m in re.finditer(r"\bjson\.loads?\(", p.read_text(encoding="utf-8"))]
    assert not bad, bad


@pytest.mark.parametrize("depth", [1, MAX_DEPTH - 1, MAX_DEPTH])
def test_json_nested_up_to_the_bound_is_read(depth):
    assert parse_json("[" * depth + "]" * depth, "x") is not None
    assert parse_json('{"a": ' * depth + "1" + "}" * depth, "x") is not None


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\a,:'),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                 max_size=3),
                     max_leaves=30)


def _depth(value) -> int:
    if not isinstance(value, (dict, list)):
        return 0
    return 1 + max([_depth(v) for v in (value.values() if isinstance(value, dict) else value)], default=0)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_nesting_is_counted_in_the_text_as_deep_as_the_tree(value):
    """Brackets inside strings (and escaped quotes) do not count."""
    assert nesting(json.dumps(value)) == _depth(value)


@pytest.mark.parametrize("text, fragment", [
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested too deeply"),
    ('{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "nested too deeply"),
    ("[" * 100_000, "nested too deeply"),
    ("[1, " + "9" * 5000 + "]", "a value cannot be read"),
    (b"\xff\xfe[]", "not UTF-8"),
    ('{"a": 1', "not valid JSON (Expecting ',' delimiter at line 1, column 8)")])
def test_json_beyond_the_bounds_is_refused_naming_the_source(text, fragment):
    with pytest.raises(JsonError, match=re.escape(fragment)) as err:
        parse_json(text, "the source")
    assert str(err.value).startswith("the source: ")


def test_a_json_file_over_its_size_bound_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.json"
    path.write_text("[" + "0, " * 1000 + "0]")
    assert len(read_json(path, "ids", max_bytes=10_000)) == 1001
    with pytest.raises(JsonError, match=r"ids .*big\.json is larger than 100 bytes"):
        read_json(path, "ids", max_bytes=100)
    with pytest.raises(JsonError, match="is a folder, not a file"):
        read_json(tmp_path, "ids")
    with pytest.raises(JsonError, match="is not a regular file"):
        read_json("/dev/zero", "ids")  # a read without end, were it read


_BRACE_PARTS = st.sampled_from(["a", "-", "{1..3}", "{03..1}", "{a,b}", "{x,{1..2},}", "{}", "{q}", "\\{",
                                "{a..e..2}", "{5..9..3}", "{,}", "{{1..2},z}", "{Z..b}", "{1..", "}"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_BRACE_PARTS, max_size=5))
def test_brace_patterns_are_counted_as_braceexpand_expands_them(parts):
    from braceexpand import UnbalancedBracesError, braceexpand

    pattern = "".join(parts)
    try:
        expected = len(list(braceexpand(pattern)))
    except UnbalancedBracesError:
        with pytest.raises(ValueError, match="unbalanced braces"):
            count_expansions(pattern)
        return
    assert count_expansions(pattern) == expected


def test_a_huge_brace_pattern_is_counted_without_expanding_it():
    assert count_expansions("s-{000000000..999999999}-{a,b,{0..9}}.tar") == 10 ** 9 * 12


def test_shards_stream_files_into_the_tar_without_holding_them(tmp_path):
    """``polyalign shards`` on a 64 MB file: it lands whole in the tar, and memory never holds it."""
    from polyalign.plugins.datasets.shards import write_shards

    pytest.importorskip("webdataset")
    data = tmp_path / "data"
    data.mkdir()
    big = data / "big.npy"
    with open(big, "wb") as fh:
        fh.truncate(64 << 20)
    (data / "train.jsonl").write_text(json.dumps({"a": [1.0, 0.0], "b": "big.npy"}) + "\n")
    tracemalloc.start()
    try:
        write_shards(data, tmp_path / "out", 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak} bytes traced"
    with tarfile.open(tmp_path / "out" / "train-000000.tar") as tar:
        assert {m.name: m.size for m in tar} == {"00000000.json": 10, "00000000.npy": 64 << 20}


def test_a_file_over_the_member_bound_is_refused_by_shards(tmp_path, monkeypatch):
    import polyalign.plugins.datasets.shards as shards

    pytest.importorskip("webdataset")
    monkeypatch.setattr(shards, "MAX_MEMBER_BYTES", 1000)
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.npy").write_bytes(b"\0" * 1001)
    (data / "train.jsonl").write_text(json.dumps({"a": [1.0], "b": "x.npy"}) + "\n")
    with pytest.raises(PolyalignError, match=r"line 1, 'b': .*x\.npy holds 1001 bytes, more than the 1000"):
        shards.write_shards(data, tmp_path / "out", 10)


def test_export_onto_a_full_disk_names_the_export_not_the_source(tmp_path, capsys):
    """A write that fails (here: over ``ulimit -f``) is reported as the export's, and leaves nothing."""
    from polyalign.cli import main

    run = polyalign.train(XOR, out=tmp_path, overrides=["data.n_train=64", "data.n_val=0", "data.n_test=32",
                                                       "train.batch_size=32", "train.epochs=1", "eval=[]"])
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal that kills
    resource.setrlimit(resource.RLIMIT_FSIZE, (300, limit[1]))
    try:
        code = main(["export", str(run), str(tmp_path / "export")])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    err = capsys.readouterr().err
    assert code == 2 and f"could not write the export {tmp_path / 'export'}: File too large" in " ".join(err.split())
    assert "model.safetensors" not in err.replace(str(tmp_path / "export"), "")  # not the checkpoint copied
    assert not (tmp_path / "export").exists() and not list(tmp_path.glob(".export.tmp-*"))


def test_a_feature_cache_entry_of_the_wrong_shape_is_refused(tmp_path):
    store = TensorStore(tmp_path / "features")
    store.put(value_key("a", None), torch.zeros(8))
    store.put(value_key("b", None), torch.zeros(3, 8))
    store.put(value_key("c", None), torch.zeros(8, dtype=torch.int64))
    store.flush()
    lookup = FeatureLookup(store, "image", 8)
    assert lookup("a", None).shape == (8,)
    with pytest.raises(PolyalignError, match=r"holds a \(3, 8\) torch.float32 tensor for this value, where the "
                                             r"encoder gives 8 floating-point numbers"):
        lookup("b", None)
    with pytest.raises(PolyalignError, match=r"holds a \(8,\) torch.int64 tensor"):
        lookup("c", None)
