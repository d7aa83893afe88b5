"""Hostile input outside `train`: queries, arrays, manifests, embeddings files, model cards and exports
get one clear message (never a traceback), NaN queries are refused, and `--debug` shows the traceback."""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import polyalign
from polyalign.cli import main
from polyalign.core.errors import MAX_MESSAGE_CHARS, PolyalignError, cut
from polyalign.files.atomic import WriteError
from polyalign.files.manifest_file import ManifestError, as_file, read_manifest
from polyalign.files.npy_file import read_npy
from polyalign.inference import export as export_module
from polyalign.inference.embeddings_file import FORMAT, read_embeddings
from polyalign.inference.export import export_model
from polyalign.inference.model_card import read_card

XOR = Path(__file__).resolve().parents[1] / "polyalign" / "recipes" / "xor-clip.yaml"
TINY = ["data.n_train=64", "data.n_val=32", "data.n_test=32", "train.batch_size=32", "train.epochs=1"]
BITS = np.eye(5, dtype=np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return polyalign.train(XOR, out=tmp_path_factory.mktemp("runs"), overrides=TINY)


@pytest.fixture(scope="module")
def model(run):
    return polyalign.load(run, device="cpu")


def _cli(*argv) -> tuple[int, str, str]:
    """Run the CLI in this process; an exception escaping it fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------ queries
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_nan_or_infinite_query_is_refused_not_ranked(bad, model):
    with pytest.raises(PolyalignError, match="query modality 'a': NaN or infinite embeddings at row"):
        model.search({"a": [[bad, 0, 1, 1, 0]]}, {"b": BITS})
    with pytest.raises(PolyalignError, match="candidates: NaN or infinite embeddings at row"):
        model.search({"a": [[1, 0, 1, 1, 0]]}, {"b": np.vstack([BITS, [[bad] * 5]])})


def test_a_tilde_naming_no_user_is_text_or_a_missing_file_not_a_bug(run, tmp_path):
    # Path("~0").expanduser() raises RuntimeError (no user "0"): found by the property test below
    assert as_file("~0", tmp_path) == "~0"
    assert as_file("~nobody-here/x.png", tmp_path) == "~nobody-here/x.png"
    np.save(tmp_path / "bits.npy", BITS)
    code, _, err = _cli("search", run, "--query=a=~0", "--candidates", f"b={tmp_path / 'bits.npy'}", "--device", "cpu")
    assert code == 2 and "unexpected" not in err and "'~0'" in err  # text where a vector belongs, said as such
    code, _, err = _cli("search", run, "--query=a=[1,0,1,1,0]", "--candidates", "b=~nobody-here/x.npy")
    assert code == 2 and "unexpected" not in err


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.text(max_size=40), st.recursive(
    st.one_of(st.floats(), st.integers(-10 ** 30, 10 ** 30), st.text(max_size=5), st.none(), st.booleans()),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=20).map(lambda v: json.dumps(v, allow_nan=True))))
@pytest.mark.slow
def test_any_query_value_is_ranked_or_refused_with_one_message(value, run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("q")
    np.save(folder / "bits.npy", BITS)
    code, out, err = _cli("search", run, f"--query=a={value}", "--candidates", f"b={folder / 'bits.npy'}",
                          "--device", "cpu")
    assert code in (0, 2), err
    assert "Traceback" not in err and len(out + err) < 20_000
    if code == 0:
        assert "nan" not in out.split("score")[-1]  # no NaN score was ranked


# ------------------------------------------------------------------ arrays, manifests, text
def test_an_npy_header_claiming_a_huge_shape_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 7, 100)})
        fh.write(b"\0" * 64)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(PolyalignError, match="header announces more data than the file holds"):
        read_npy(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50_000_000 and time.perf_counter() - start < 5  # 4 GB were claimed


def test_a_csv_cell_over_the_field_limit_names_the_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('a,b\n1,2\n3,"' + "x" * 200_000 + '"\n')
    with pytest.raises(ManifestError, match=r"m\.csv, line 3: not a CSV row \(field larger than field limit"):
        read_manifest(path)


def test_text_that_is_not_utf8_is_named(run, tmp_path):
    (tmp_path / "t.txt").write_bytes(b"ok\n\xff\xfe\n")
    code, _, err = _cli("embed", run, "--modality", "b", "--input", tmp_path / "t.txt", "--out",
                        tmp_path / "e.safetensors")
    assert code == 2 and "t.txt: not a UTF-8 text file" in err


# ------------------------------------------------------------------ embeddings files
def _embeddings_file(path: Path, tensor: torch.Tensor, **metadata) -> Path:
    meta = {"format": FORMAT, "modality": "b", "ids": json.dumps(list(range(tensor.shape[0] if tensor.dim() else 0)))}
    meta.update(metadata)
    save_file({"embeddings": tensor.contiguous()}, str(path), {k: v for k, v in meta.items() if v is not None})
    return path


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.one_of(st.none(), st.text(max_size=30), st.recursive(
    st.one_of(st.integers(), st.text(max_size=4), st.floats(), st.none(), st.booleans()),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10).map(json.dumps)), rows=st.integers(0, 4))
def test_any_ids_metadata_is_read_or_refused_with_one_message(ids, rows, tmp_path_factory):
    path = _embeddings_file(tmp_path_factory.mktemp("e") / "e.safetensors", torch.zeros(rows, 4), ids=ids)
    try:
        saved = read_embeddings(path)
    except PolyalignError as exc:
        assert "the metadata 'ids'" in str(exc)
        return
    assert len(saved.ids) == rows and all(isinstance(i, (str, int, float)) for i in saved.ids)
    assert len({str(i) for i in saved.ids}) == rows  # repeated ids are refused: a hit must name one candidate


@pytest.mark.parametrize("tensor, metadata, fragment", [
    (torch.zeros(3, 4, dtype=torch.int64), {}, "must be a 2-D floating tensor"),
    (torch.zeros(4), {}, "must be a 2-D floating tensor"),
    (torch.full((2, 4), float("nan")), {}, "holds NaN or infinite values"),
    (torch.zeros(2, 4), {"modality": None}, "does not say which modality"),
    (torch.zeros(2, 4), {"format": "other"}, "is not an embeddings file written by `polyalign embed`")])
def test_a_broken_embeddings_file_is_refused(tensor, metadata, fragment, tmp_path):
    with pytest.raises(PolyalignError, match=fragment):
        read_embeddings(_embeddings_file(tmp_path / "e.safetensors", tensor, **metadata))


def test_embeddings_of_another_width_are_refused(run, model, tmp_path):
    path = _embeddings_file(tmp_path / "e.safetensors", torch.zeros(3, 7), weights_sha256=model.weights_sha256)
    code, _, err = _cli("search", run, "--query=a=[1,0,1,1,0]", "--candidates", f"b={path}")
    assert code == 2 and "holds embeddings of 7 numbers; this model's have 16" in err


# ------------------------------------------------------------------ model cards and exports
@pytest.mark.parametrize("requires, fragment", [
    ("[vector, clip]", "requires.0 is 'vector'; each entry of `requires:` must be a mapping of text"),
    ("[{kind: loss}]", "requires.0 is {'kind': 'loss'}"),
    ("[{kind: loss, name: clip, version: 1.5}]", "requires.0 is"),
    ("{kind: loss}", "has no polyalign header")])
def test_a_malformed_model_card_is_refused(requires, fragment, tmp_path):
    card = tmp_path / "MODEL_CARD.md"
    card.write_text(f"---\nrequires: {requires}\n---\n")
    with pytest.raises(PolyalignError, match=fragment.replace("[", r"\[").replace("{", r"\{")):
        read_card(card)


def test_a_failed_export_leaves_nothing_that_blocks_the_next(run, tmp_path, monkeypatch):
    def full_disk(path, text):
        raise WriteError(f"could not write {path}: No space left on device")

    monkeypatch.setattr(export_module, "atomic_write_text", full_disk)
    with pytest.raises(WriteError):
        export_model(run, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary twin
    monkeypatch.undo()
    (tmp_path / "model").mkdir()  # an empty folder is a fine destination
    dest = export_model(run, tmp_path / "model")
    assert sorted(p.name for p in dest.iterdir()) == ["MODEL_CARD.md", "model.safetensors", "recipe.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ------------------------------------------------------------------ flags and the last resort
def test_device_errors_name_the_flag(run, tmp_path):
    np.save(tmp_path / "bits.npy", BITS)
    code, _, err = _cli("search", run, "--query=a=[1,0,1,1,0]", "--candidates", f"b={tmp_path / 'bits.npy'}",
                        "--device", "xla")
    assert code == 2 and err.startswith("error: --device: 'xla': polyalign does not run on 'xla' devices")


def test_debug_shows_the_traceback_of_an_error(monkeypatch, tmp_path):
    code, _, err = _cli("validate", tmp_path / "missing.yaml")
    assert code == 2 and "Traceback" not in err and err.startswith("error:")
    for argv, env in ((["--debug", "validate"], None), (["validate", "--debug"], None), (["validate"], "1")):
        if env:
            monkeypatch.setenv("POLYALIGN_DEBUG", env)
        code, _, err = _cli(*argv, tmp_path / "missing.yaml")
        assert code == 2 and "Traceback (most recent call last)" in err and "RecipeError" in err
        assert err.rstrip().splitlines()[-1].startswith("error:") or "error:" in err


def test_an_unexpected_exception_is_one_message_exit_1(monkeypatch):
    def bug(args):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr("polyalign.cli.cmd_plugins", bug)
    code, _, err = _cli("plugins")
    assert code == 1 and "Traceback" not in err
    assert err.startswith("error: unexpected ZeroDivisionError: float division by zero. This is a bug")
    assert "--debug" in err


@pytest.mark.parametrize("exc, start, end", [
    (ZeroDivisionError("x" * 100_000), "error: unexpected ZeroDivisionError: xxx", "and report it."),
    (OSError(28, "No space left on device", "/d/" + "d" * 100_000), "error: /d/ddd", "then run the command again)"),
    (MemoryError("m" * 100_000), "error: out of memory (mmm", "use smaller inputs or settings"),
    (PolyalignError("p" * 100_000 + "; do this"), "error: ppp", "ppp; do this")])
def test_a_long_message_is_cut_once_keeping_its_start_and_what_to_do(monkeypatch, exc, start, end):
    """Whatever the error, the CLI prints it cut once (one note of the cut), its advice at the end kept."""
    def fail(args):
        raise exc

    monkeypatch.setattr("polyalign.cli.cmd_plugins", fail)
    code, _, err = _cli("plugins")
    text = err.strip()
    assert code in (1, 2) and text.startswith(start) and text.endswith(end), text[-200:]
    assert text.count("characters cut ...]") == 1 and len(text) <= MAX_MESSAGE_CHARS + len("error: ")


@pytest.mark.parametrize("length, limit", [(200, 200), (201, 200), (1000, 200), (10 ** 6, MAX_MESSAGE_CHARS)])
def test_a_cut_text_is_at_most_its_limit_note_included(length, limit):
    text = "".join(chr(97 + i % 26) for i in range(length - 3)) + "END"
    shown_text = cut(text, limit)
    assert len(shown_text) <= limit and shown_text.endswith("END")
    assert (shown_text == text) == (length <= limit)
    if length > limit:
        kept = len(shown_text) - len(re.search(r" \[\.\.\. \d+ characters cut \.\.\.\] ", shown_text).group(0))
        assert f"[... {length - kept} characters cut ...]" in shown_text
