"""Round four of the hostile inputs (issue 31): what a folder handed to a command, a file in the way and a
manifest entry that is not a regular file can do."""

from __future__ import annotations

import os
import re
import time

import pytest
import torch
from conftest import RECIPES

from polyalign.cli import main
from polyalign.core.errors import PolyalignError


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_out_under_a_file_says_what_is_in_the_way(command, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a folder")
    for out, said in [(tmp_path / "taken", "something of that name is there already"),
                      (tmp_path / "taken" / "runs", "a part of the path is a file, not a folder")]:
        assert main([command, str(RECIPES / "xor-symile.yaml"), "train.epochs=1", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert said in err and str(tmp_path / "taken") in err and "Traceback" not in err
    assert (tmp_path / "taken").read_text() == "a file, not a folder"


def test_a_manifest_that_is_a_pipe_is_said_to_be_one(tmp_path, capsys, monkeypatch):
    os.mkfifo(tmp_path / "train.jsonl")
    (tmp_path / "ok.jsonl").write_text('{"a": [1, 2], "b": [3, 4]}\n' * 4)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {plugin: manifest, train: train.jsonl, val: ok.jsonl, test: ok.jsonl}\n"
                      "modalities: {a: {encoder: {plugin: vector}}, b: {encoder: {plugin: vector}}}\n"
                      "loss: {plugin: clip}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(recipe), "--check-data"]) == 2
    err = capsys.readouterr().err
    assert "manifest train.jsonl is not a regular file (a device, pipe or socket)" in err and "not found" not in err


def test_a_metrics_log_too_large_is_refused_by_name(tmp_path, monkeypatch):
    from polyalign.files import run_files
    from polyalign.files.run_files import log_lines

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"kind": "step", "step": 1}\n' * 100)
    assert [n for n, _ in log_lines(log)] == list(range(1, 101))
    monkeypatch.setattr(run_files, "MAX_LOG_BYTES", 1000)
    with pytest.raises(PolyalignError, match=r"metrics.jsonl is 0 MB, more than the 0 MB polyalign reads"):
        list(log_lines(log))
    log.write_bytes(b'{"kind": "st\xff"}\n')
    monkeypatch.setattr(run_files, "MAX_LOG_BYTES", 1 << 20)
    with pytest.raises(PolyalignError, match="cannot read it"):
        list(log_lines(log))


def test_status_of_a_sweep_whose_runs_are_all_done_leaves_no_time(tmp_path):
    from polyalign.files.run_files import RECIPE_FILE, REPORT_DIR, REPORT_JSON
    from polyalign.sweep.plan import merge_plan, new_plan, slot_dir
    from polyalign.sweep.progress import sweep_progress

    plan = merge_plan(tmp_path, new_plan(RECIPES / "xor-symile.yaml", [], {"train.lr": ["0.1", "0.2"]}, [0, 1]))
    for spec in plan.runs:  # finished, with no time recorded (as a run finished by an older version)
        run = slot_dir(tmp_path, spec) / "run"
        (run / REPORT_DIR).mkdir(parents=True)
        (run / RECIPE_FILE).write_text("name: x\n")
        (run / REPORT_DIR / REPORT_JSON).write_text("[]")
    text = sweep_progress(tmp_path).text()
    assert "4 run(s): 4 done; time left: none" in text and "no run has finished" not in text


@pytest.mark.parametrize("text", ['"\\ud800"', '{"\\udc00": 1}', '[["a", {"b": "x\\uDBFF"}]]'])
def test_json_with_a_lone_surrogate_is_refused_where_it_is_read(text):
    from polyalign.files.json_file import JsonError, parse_json

    with pytest.raises(JsonError, match="holds half of a UTF-16 surrogate pair alone"):
        parse_json(text, "body")
    assert parse_json('"\\ud83d\\ude00"', "body") == "\U0001f600"  # a complete pair is a character


def test_a_caption_file_that_is_missing_is_an_error_not_its_name_as_text(tmp_path):
    import json

    import polyalign

    (tmp_path / "here.txt").write_text("a caption read from its file")
    rows = [{"v": [1.0, 2.0], "caption": "here.txt"}, {"v": [3.0, 4.0], "caption": "an inline caption.txt"},
            {"v": [5.0, 6.0], "caption": "captions/lost.txt"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = polyalign.build("dataset", "manifest", path=str(tmp_path)).split("train")
    assert [type(s["caption"]).__name__ for s in samples] == ["PosixPath", "str", "PosixPath"]
    text = polyalign.build("encoder", "byte_text", dim=8, layers=1, heads=2)
    assert text.decode(samples[1]["caption"], tmp_path)["input_ids"].numel() > 0  # inline text, whatever it ends
    with pytest.raises(PolyalignError, match=r"lost.txt"):  # the lost file is said, not read as the text of its name
        text.decode(samples[2]["caption"], tmp_path)


@pytest.mark.slow
def test_decode_bombs_are_refused_from_their_header_with_their_size(tmp_path):
    import struct
    import zlib

    import numpy as np
    import soundfile as sf

    import polyalign

    big = tmp_path / "big.png"  # a PNG header that announces 13000 x 13000 pixels (169 million decoded)
    ihdr = struct.pack(">IIBBBBB", 13000, 13000, 8, 0, 0, 0, 0)
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                    + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\0\0\0\0IEND\xaeB`\x82")
    image = polyalign.build("encoder", "image", model="test_resnet", image_size=16)
    started = time.monotonic()
    with pytest.raises(PolyalignError, match=r"big.png is 13000 x 13000 pixels \(169.0 million\), more than the 40 "
                                             r"million the image encoder decodes \(its option max_pixels\)"):
        image.decode(big, None)
    assert time.monotonic() - started < 2  # refused from the header, not after decoding
    long = tmp_path / "long.flac"
    with sf.SoundFile(long, "w", samplerate=8000, channels=1, format="FLAC") as fh:
        for _ in range(61):  # 610 s of silence: tiny as FLAC
            fh.write(np.zeros(80000, dtype="float32"))
    audio = polyalign.build("encoder", "audio", channels=[4])
    with pytest.raises(PolyalignError, match=r"long.flac holds 610 s in 1 channel\(s\), more than the 600 s"):
        audio.decode(long, None)
    short = polyalign.build("encoder", "audio", channels=[4], max_seconds=1000).decode(long, None)
    assert short.shape[-1] > 0  # within a raised bound it decodes


@pytest.mark.parametrize("override, said", [
    ("train.threads=1000000", "train.threads: must be auto or a number of threads (1 to 1024), got 1000000"),
    ("train.num_workers=5000", "train.num_workers: must be auto or a number of worker processes (0 to 1024), got 5000"),
])
def test_absurd_thread_and_worker_counts_are_invalid(override, said, capsys):
    assert main(["validate", str(RECIPES / "xor-clip.yaml"), override]) == 2
    assert said in capsys.readouterr().err


def _tree(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.slow
def test_commands_that_only_read_a_tampered_sweep_delete_and_write_nothing_outside_their_out(tmp_path, capsys):
    import json

    sweep = tmp_path / "sweep"
    assert main(["sweep", str(RECIPES / "xor-clip.yaml"), "data.n_train=256", "data.n_val=64", "data.n_test=64",
                 "train.epochs=1", "logging=[]", "--seeds", "2", "--out", str(sweep)]) == 0
    slot = next((sweep / "runs").glob("*/seed-0"))
    (slot / "left-by-a-kill").mkdir()  # an empty folder in a slot: the worker's to clean, not a reader's
    victim = tmp_path / "elsewhere" / "empty"
    victim.mkdir(parents=True)
    before = _tree(tmp_path)
    assert main(["sweep", "--status", str(sweep)]) == 0
    assert main(["compare", str(sweep), "--out", str(tmp_path / "out")]) == 0
    assert _tree(tmp_path) - before == {"out"} | {f"out/{p.name}" for p in (tmp_path / "out").iterdir()}
    assert before - _tree(tmp_path) == set()  # nothing deleted
    plan = json.loads((sweep / "sweep.json").read_text())
    plan["runs"][0]["id"] = "../../elsewhere/empty/seed-0"  # a tampered id pointing out of the sweep
    (sweep / "sweep.json").write_text(json.dumps(plan))
    capsys.readouterr()
    for argv in (["sweep", "--status", str(sweep)], ["compare", str(sweep), "--out", str(tmp_path / "out2")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "sweep.json" in err and "Traceback" not in err
    assert victim.is_dir() and (slot / "left-by-a-kill").is_dir() and not (tmp_path / "out2").exists()


def _block_stream(tmp_path):
    import json

    import polyalign
    from polyalign.plugins.datasets.shards import write_shards
    from polyalign.training.shard_blocks import BlockStream

    pytest.importorskip("webdataset")
    (tmp_path / "m").mkdir()
    rows = [{"id": f"r{i}", "v": [float(i), -1.0]} for i in range(4)]
    (tmp_path / "m" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_shards(tmp_path / "m", tmp_path / "s", 4, shuffle=False)
    data = polyalign.build("dataset", "webdataset", path=str(tmp_path / "s"), modalities={"v": "json"})
    vector = polyalign.build("encoder", "vector", dim=2)
    return BlockStream(data.split("train"), {"v": lambda x: vector.decode(x, None)}, {"v": "v"}, tmp_path / "blocks")


@pytest.mark.parametrize("damage, said", [
    (lambda block: ["not", "a", "dict"], "it is not a block of decoded rows"),
    (lambda block: {**block, "keys": block["keys"][:2], "labels": block["labels"][:2], "ids": block["ids"][:2]},
     "it holds 2 rows, not the shard's 4"),
    (lambda block: {**block, "modalities": {"v": {**block["modalities"]["v"], "fields": {"": {
        **block["modalities"]["v"]["fields"][""],
        "offsets": block["modalities"]["v"]["fields"][""]["offsets"] * 100}}}}},
     "modality 'v', field '': its offsets and shapes do not fit its data"),
])
def test_a_damaged_shard_block_blames_the_cache_file(damage, said, tmp_path):
    stream = _block_stream(tmp_path)
    shard = stream.shards[0]
    list(stream.read(shard))  # writes the block
    (path,) = (tmp_path / "blocks").glob("*.pt")
    torch.save(damage(torch.load(path, weights_only=True)), path)
    fresh = type(stream)(stream.inner, stream.decoders, stream.folders, stream.folder)
    with pytest.raises(PolyalignError, match=f"cache file {path} is damaged: {re.escape(said)}; delete it"):
        list(fresh.read(shard))


def test_a_block_write_that_fails_in_torch_save_is_a_clear_error(tmp_path, monkeypatch):
    stream = _block_stream(tmp_path)

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0\nmore")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(PolyalignError, match=r"cannot write to the cache folder .*blocks: \[enforce fail at "
                                             r"inline_container.cc:664\] . unexpected pos 64 vs 0. Free some space"):
        list(stream.read(stream.shards[0]))
    assert not list((tmp_path / "blocks").glob("*"))  # no half-written file left
