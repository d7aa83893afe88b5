"""Decoded shards as blocks (``cache.inputs: disk`` on streamed shards): written by the first whole
read of a shard, read instead of the tar afterwards, and never used for a changed shard."""

from __future__ import annotations

import json
import os
import pickle
from functools import partial
from itertools import islice

import pytest
import torch

import polyalign
from polyalign.plugins.datasets.shards import write_shards
from polyalign.training.input_cache import CachedDecode
from polyalign.training.shard_blocks import BlockStream, Decoded, block_name
from polyalign.training.tensor_store import TensorStore

pytest.importorskip("webdataset")


def _rows(n: int) -> list[dict]:
    rows = [{"id": f"r{i}", "label": i % 3 if i % 2 else f"c{i}", "v": [float(i), -1.0]} for i in range(n)]
    for i, row in enumerate(rows):
        if i % 4 != 1:  # some tuples have no text
            row["t"] = f"text number {i}" * (1 + i % 3)
    return rows


@pytest.fixture
def blocks(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(10)), encoding="utf-8")
    write_shards(folder, tmp_path / "s", 4, shuffle=False)  # shards of 4, 4 and 2 tuples
    data = polyalign.build("dataset", "webdataset", path=str(tmp_path / "s"), modalities={"v": "json", "t": "txt"})
    encoders = {"v": polyalign.build("encoder", "vector", dim=2),
                "t": polyalign.build("encoder", "byte_text", dim=8, layers=1, heads=2, max_length=16)}
    stores = {m: TensorStore(tmp_path / "cache" / m) for m in encoders}
    decoders = {m: CachedDecode(encoders[m], stores[m]).decoded for m in encoders}
    stream = BlockStream(data.split("train"), {m: partial(d, root=None) for m, d in decoders.items()},
                         {m: m for m in encoders}, tmp_path / "cache" / "blocks")
    return stream, encoders, tmp_path


def _same(a, b):
    assert [k for k, _ in a] == [k for k, _ in b]
    for (_, x), (_, y) in zip(a, b):
        assert x.keys() == y.keys() and x.get("label") == y.get("label") and x.get("id") == y.get("id")
        for m in ("v", "t"):
            if m in x:
                assert isinstance(x[m], Decoded) and isinstance(y[m], Decoded)
                u, w = x[m].value, y[m].value
                assert u.keys() == w.keys() and all(torch.equal(u[f], w[f]) for f in u) if isinstance(u, dict) \
                    else torch.equal(u, w)


def test_a_shard_read_whole_becomes_a_block_read_instead_of_the_tar(blocks, monkeypatch):
    stream, encoders, tmp_path = blocks
    first = stream.shards[0]
    from_tar = list(stream.read(first))
    assert len(from_tar) == 4 and "t" not in from_tar[1][1] and from_tar[1][1]["label"] == 1
    raw = {s["id"]: s for s in stream.inner.read(first) for s in [s[1]]}
    for _, sample in from_tar:  # what the encoders decode, and the label and id as written
        assert torch.equal(sample["v"].value, encoders["v"].decode(raw[sample["id"]]["v"], None))
    assert len(list((tmp_path / "cache" / "blocks").glob("*.pt"))) == 1

    def no_tar(*args, **kwargs):
        raise AssertionError("the tar was read although its block is there")

    monkeypatch.setattr(stream.inner, "read", no_tar)
    _same(list(stream.read(first)), from_tar)
    _same(list(stream.read(first, 3)), from_tar[3:])
    fresh = BlockStream(stream.inner, stream.decoders, stream.folders, stream.folder)  # another process
    _same(list(fresh.read(first)), from_tar)


def test_no_block_for_a_partial_read_a_changed_shard_or_other_options(blocks):
    stream, _, tmp_path = blocks
    folder = tmp_path / "cache" / "blocks"
    assert len(list(islice(stream.read(stream.shards[1]), 3))) == 3 and not list(folder.glob("*.pt"))
    assert len(list(islice(stream.read(stream.shards[2]), 2))) == 2  # readers take a shard's size and stop
    assert len(list(folder.glob("*.pt"))) == 1
    next(iter(folder.glob("*.pt"))).unlink()
    assert len(list(stream.read(stream.shards[1], 1))) == 3 and not list(folder.glob("*.pt"))
    list(stream.read(stream.shards[1]))
    assert len(list(folder.glob("*.pt"))) == 1
    stat = os.stat(stream.shards[1].name)
    os.utime(stream.shards[1].name, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the shard changed
    list(stream.read(stream.shards[1]))
    assert len(list(folder.glob("*.pt"))) == 2
    other = BlockStream(stream.inner, stream.decoders, {"v": "v-other-options", "t": "t"}, folder)
    list(other.read(stream.shards[1]))
    assert len(list(folder.glob("*.pt"))) == 3


def test_one_bounded_lru_of_open_files_serves_both_caches(blocks):
    """Blocks and tensor-store parts are kept open by one bounded LRU: the least recently used is let go first, a
    missing file is not kept, and a copy sent to a worker process starts with none open but reads the same."""
    stream, _, tmp_path = blocks
    stream.open_blocks.limit = 2
    names = [block_name(shard, stream.folders) for shard in stream.shards]
    for _ in range(2):  # the first pass writes the blocks, the second opens them
        for shard in stream.shards:
            list(stream.read(shard))
    assert list(stream.open_blocks.files) == names[1:]
    list(stream.read(stream.shards[1]))
    assert list(stream.open_blocks.files) == [names[2], names[1]]
    assert stream.open_blocks.get("no-such-block.pt", lambda n: stream._load(n, 4)) is None
    assert len(stream.open_blocks) == 2

    store = TensorStore(tmp_path / "parts")
    store.handles.limit = 2
    for i in range(5):  # five parts, one entry each
        store.put(f"k{i}", torch.full((3,), float(i)))
        store.flush()
    opened = []
    load = store._load
    store._load = lambda path: opened.append(path.name) or load(path)
    for i in [0, 1, 2, 0, 2, 1]:
        assert torch.equal(store.get(f"k{i}"), torch.full((3,), float(i)))
        assert len(store.handles) <= 2
    part = {i: store.index[f"k{i}"][0].name for i in range(3)}
    assert opened == [part[0], part[1], part[2], part[0], part[1]]  # k2 found open; k0, then k1, had been let go
    worker = pickle.loads(pickle.dumps(store.handles))
    assert len(worker) == 0 and worker.limit == 2
